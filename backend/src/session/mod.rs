//! Sessions, the optional part of a backend: one sandbox held across many jobs.
//!
//! A backend that can hold a sandbox returns a [`SessionBackend`] from
//! [`crate::Backend::sessions`]; the default is `None`, so backends written before sessions
//! keep compiling and pools on them refuse session opens with `sessions_unsupported`.
//!
//! A [`SandboxSession`] runs each job inside the same sandbox (working directory kept), each
//! under its own wall timeout; when a job is stopped (timeout, cancel, output limit) every
//! process it left is killed ([`SandboxSession::reset`]) but the files stay. Kernels are one
//! design for every backend ([`kernel`]): a Python script run inside the sandbox like any job.

pub mod kernel;

use std::time::Duration;

use async_trait::async_trait;
use openshell_protocol::Limits;

use crate::Capabilities;
use crate::error::BackendError;
use crate::execution::Execution;
use crate::job::{Job, JobControl};

/// What a session's sandbox is opened with.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSpec {
    /// The session id (a subject token).
    pub id: String,
    /// The tenant owning it.
    pub tenant: String,
    /// Limits of the whole sandbox: memory, processes, disk, cpus (others are per job).
    pub limits: Limits,
}

impl SessionSpec {
    /// The job that holds the session's sandbox open: `argv` under the session's limits, with
    /// no stdin, files, network or outputs.
    pub fn keeper(&self, argv: Vec<String>) -> Job {
        Job {
            id: self.id.clone(),
            tenant: self.tenant.clone(),
            language: None,
            argv,
            stdin: Default::default(),
            env: Default::default(),
            files: Vec::new(),
            limits: self.limits.clone(),
            network: false,
            outputs: None,
            egress: None,
        }
    }
}

/// A backend's ability to hold sandboxes for sessions.
#[async_trait]
pub trait SessionBackend: Send + Sync {
    /// Creates and starts the session's sandbox.
    async fn open(&self, spec: SessionSpec) -> Result<Box<dyn SandboxSession>, BackendError>;
}

/// One held sandbox. Dropping it must destroy the sandbox (in the background if need be).
#[async_trait]
pub trait SandboxSession: Send + Sync {
    /// Where it is, for messages and logs (a container id, a host and directory).
    fn describe(&self) -> String;

    /// What jobs in this sandbox can be held to, given its pool backend's `capabilities`;
    /// admission refuses what is missing. The same unless a backend says otherwise.
    fn capabilities(&self, capabilities: Capabilities) -> Capabilities {
        capabilities
    }

    /// Runs `job` inside the sandbox to its end under its own limits (its `timeout` and
    /// `output`); its files are written into the kept working directory first.
    async fn execute(&self, job: Job, control: JobControl) -> Result<Execution, BackendError>;

    /// Kills every process in the sandbox but its keep-alive, keeping its files: after a job
    /// was stopped, so nothing of it runs on, and kernels start afresh.
    async fn reset(&self) -> Result<(), BackendError>;

    /// Destroys the sandbox and waits until it is gone.
    async fn close(&self) -> Result<(), BackendError>;
}

/// How long a reset may take before the session is given up.
pub const RESET_WAIT: Duration = Duration::from_secs(10);
