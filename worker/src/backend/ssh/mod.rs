//! The SSH backend (`SANDBOX_BACKEND=ssh`): jobs run on dedicated remote hosts over pooled connections.

pub mod settings;

pub use settings::SshSettings;
