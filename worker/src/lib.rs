//! The OpenShell worker: NATS intake, admission, sandbox backends, audit and the CLI.
//!
//! The flow, one module each: [`intake`] (NATS) → admission (`openshell-scheduler`) →
//! [`job`] → [`backend`] → result + [`audit`].

pub mod audit;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod config;
pub mod durable;
pub mod intake;
pub mod job;
pub mod languages;
pub mod logging;
pub mod metrics;
pub mod nats;
pub mod service;
