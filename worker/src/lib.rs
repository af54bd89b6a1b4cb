//! The OpenShell worker: NATS intake, admission, audit, metrics and the CLI, over the sandbox
//! backends of the `openshell-backend*` crates.
//!
//! [`Worker::start`] runs a worker (`openshell worker` is a thin caller, see [`cli`]); the
//! flow of a job, one module each: [`intake`] (NATS) → admission (`openshell-scheduler`) →
//! [`job`] → a backend built by [`registry`] → result ([`reply`]) + [`audit`].
//! `ARCHITECTURE.md` at the top of the repository maps the crates.

pub mod audit;
pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod durable;
pub mod egress;
pub mod files;
pub mod intake;
pub mod job;
pub mod logging;
pub mod mcp;
pub mod metrics;
pub mod nats;
pub mod registry;
pub mod reply;
pub mod service;
pub mod session;
pub mod worker;

pub use worker::{Worker, WorkerError, WorkerHandle};
