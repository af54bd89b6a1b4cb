//! The Docker backend (`SANDBOX_BACKEND=docker`): a fresh hardened container per job.

pub mod settings;

pub use settings::DockerSettings;
