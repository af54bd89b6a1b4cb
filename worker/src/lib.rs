//! The OpenShell worker: NATS intake, admission, sandbox backends, audit and the CLI.
//!
//! The flow, one module each: [`intake`] (NATS) → admission (`openshell-scheduler`) →
//! [`job`] → [`backend`] → result + [`audit`].

pub mod backend;
pub mod languages;
