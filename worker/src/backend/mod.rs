//! The sandbox backend interface: the one extension point every backend implements.
//!
//! A backend receives a [`Job`] whose program is already resolved to an argv (code from a
//! `language` request arrives as a file in the working directory), whose limits are the
//! effective ones after the pool's policy, and a [`JobControl`] with a cancellation token and
//! an [`OutputSink`]. It runs the job, enforces the limits, and returns an [`Execution`] that
//! says how the job ended and how each limit was enforced.
//!
//! # Writing a backend
//!
//! ```no_run
//! use async_trait::async_trait;
//! use openshell_worker::backend::{Backend, BackendError, Capabilities, Execution, Job, JobControl};
//!
//! struct Echo;
//!
//! #[async_trait]
//! impl Backend for Echo {
//!     fn kind(&self) -> &'static str { "echo" }
//!     fn capabilities(&self) -> Capabilities { Capabilities::new() }
//!     async fn health(&self) -> Result<(), BackendError> { Ok(()) }
//!     async fn execute(&self, job: Job, control: JobControl) -> Result<Execution, BackendError> {
//!         control.output.write(openshell_worker::backend::Stream::Stdout, job.argv.join(" ").as_bytes());
//!         Ok(Execution::exited(0))
//!     }
//! }
//! ```
//!
//! Register it in [`registry`] and run the conformance suite (`worker/tests/conformance/`)
//! against it.

pub mod docker;
pub mod local;
pub mod oom;
pub mod output;
pub mod registry;
pub mod ssh;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use openshell_protocol::{EnforcementReport, ErrorInfo, ErrorKind, Limits, Payload};
use tokio_util::sync::CancellationToken;

pub use output::{CapturedOutput, OutputSink, Stream};

/// How a backend would enforce each limit it supports; a limit absent here is not enforceable.
pub type Capabilities = EnforcementReport;

/// A file to write into the job's working directory before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFile {
    /// Relative path (validated: no `..`, no leading `/`).
    pub path: String,
    /// Contents.
    pub content: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// A job as a backend sees it: admitted, with its program resolved and its limits in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The client's job id.
    pub id: String,
    /// The tenant it runs for.
    pub tenant: String,
    /// The request's language, if it gave one (backends may pick an image by it).
    pub language: Option<String>,
    /// The program and its arguments; `argv[0]` is looked up on the sandbox's PATH.
    pub argv: Vec<String>,
    /// Bytes for standard input (empty: stdin is closed).
    pub stdin: Payload,
    /// Environment variables, on top of a minimal PATH and HOME.
    pub env: BTreeMap<String, String>,
    /// Files for the working directory, including the code file of a `language` job.
    pub files: Vec<JobFile>,
    /// Effective limits.
    pub limits: Limits,
    /// Whether the pool granted network access.
    pub network: bool,
}

/// What a backend receives besides the job: how to stop, and where output goes.
#[derive(Debug, Clone)]
pub struct JobControl {
    /// Cancelled when a client cancels the job or the worker shuts down.
    pub cancel: CancellationToken,
    /// Where stdout and stderr go; it enforces the output limit.
    pub output: OutputSink,
}

/// Why the program stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited or died of a signal on its own.
    Exited,
    /// The wall timeout killed it.
    Timeout,
    /// The output limit stopped it.
    OutputLimit,
    /// It ran out of memory.
    OutOfMemory,
    /// Cancellation killed it.
    Cancelled,
}

/// The outcome of running a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    /// Why it stopped.
    pub ending: Ending,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Killing signal, when one did.
    pub signal: Option<i32>,
    /// Wall time of the program.
    pub wall_time: Duration,
    /// CPU time, where measured.
    pub cpu_time: Option<Duration>,
    /// Peak memory in bytes, where measured.
    pub peak_memory_bytes: Option<u64>,
    /// How each limit in force was enforced for this run.
    pub enforcement: EnforcementReport,
}

impl Execution {
    /// A program that exited with `code`, with nothing measured.
    pub fn exited(code: i32) -> Self {
        Self {
            ending: Ending::Exited,
            exit_code: Some(code),
            signal: None,
            wall_time: Duration::ZERO,
            cpu_time: None,
            peak_memory_bytes: None,
            enforcement: EnforcementReport::new(),
        }
    }
}

/// A backend failure: the job could not be run as asked. Says what failed, where, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{backend} backend: {message} [{where_}]")]
pub struct BackendError {
    /// Machine-readable kind (connection failed, sandbox start failed, ...).
    pub kind: ErrorKind,
    /// Backend name.
    pub backend: &'static str,
    /// Where: a host, container id, path.
    pub where_: String,
    /// What failed and what to do.
    pub message: String,
}

impl BackendError {
    /// A new error.
    pub fn new(
        kind: ErrorKind,
        backend: &'static str,
        where_: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            backend,
            where_: where_.into(),
            message: message.into(),
        }
    }

    /// The error as it travels.
    pub fn to_info(&self) -> ErrorInfo {
        ErrorInfo::new(self.kind, self.to_string())
    }
}

/// A sandbox backend. Implementations must be cheap to share (`Arc<dyn Backend>`).
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The backend's kind, as in `SANDBOX_BACKEND` (`docker`, `ssh`, `none`, ...).
    fn kind(&self) -> &'static str;

    /// How each limit would be enforced; admission fails closed on limits missing here.
    fn capabilities(&self) -> Capabilities;

    /// Checks that the backend can run jobs now (daemon reachable, host up).
    async fn health(&self) -> Result<(), BackendError>;

    /// Runs `job` to its end under its limits. Must kill every process of the job on timeout,
    /// cancellation or output limit before returning, and must not panic on any job.
    async fn execute(&self, job: Job, control: JobControl) -> Result<Execution, BackendError>;
}
