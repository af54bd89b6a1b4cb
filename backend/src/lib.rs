//! The sandbox backend interface: the one extension point every backend implements.
//!
//! A backend receives a [`Job`] whose program is already resolved to an argv (code from a
//! `language` request arrives as a file in the working directory, see [`language`]), whose
//! limits are the effective ones after the pool's policy, and a [`JobControl`] with a
//! cancellation token and an [`OutputSink`]. It runs the job, enforces the limits, and returns
//! an [`Execution`] that says how the job ended and how each limit was enforced.
//!
//! # Writing a backend
//!
//! ```no_run
//! use async_trait::async_trait;
//! use openshell_backend::{Backend, BackendError, Capabilities, Execution, Job, JobControl, Stream};
//!
//! struct Echo;
//!
//! #[async_trait]
//! impl Backend for Echo {
//!     fn kind(&self) -> &'static str { "echo" }
//!     fn capabilities(&self) -> Capabilities { Capabilities::new() }
//!     async fn health(&self) -> Result<(), BackendError> { Ok(()) }
//!     async fn execute(&self, job: Job, control: JobControl) -> Result<Execution, BackendError> {
//!         control.output.write(Stream::Stdout, job.argv.join(" ").as_bytes());
//!         Ok(Execution::exited(0))
//!     }
//! }
//! ```
//!
//! Then run the conformance suite against it from its tests, with the `testing` feature:
//! `openshell_backend::conformance_suite!(async { Arc::new(Echo) as Arc<dyn Backend> });`
//! (see `examples/nice-backend/` at the top of the repository).

mod context;
pub mod egress;
mod error;
mod execution;
pub mod files;
mod job;
mod kind;
pub mod language;
mod metrics;
pub mod oom;
pub mod output;
pub mod session;
#[cfg(feature = "testing")]
pub mod testing;

use async_trait::async_trait;
use openshell_protocol::EnforcementReport;

pub use context::PoolContext;
pub use egress::EgressEndpoint;
pub use error::{BackendError, Cause};
pub use execution::{Ending, Execution};
pub use files::{CollectedFile, CollectedFiles, FilesRequest};
pub use job::{Job, JobControl, JobFile};
pub use kind::{BackendKind, UnknownBackend};
pub use language::LanguageSpec;
pub use metrics::{BackendEvent, BackendMetrics, MetricsSink};
pub use output::{CapturedOutput, OutputSink, Stream, Written};
pub use session::{SandboxSession, SessionBackend, SessionSpec};

/// How a backend would enforce each limit it supports; a limit absent here is not enforceable.
pub type Capabilities = EnforcementReport;

/// A sandbox backend. Implementations must be cheap to share (`Arc<dyn Backend>`).
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The backend's kind, as in `SANDBOX_BACKEND` (`docker`, `ssh`, `none`, ...).
    fn kind(&self) -> &'static str;

    /// How each limit would be enforced now; admission fails closed on limits missing here.
    /// It may change while the backend runs (a daemon restarted with other features): the
    /// worker reads it for every job, before anything is audited as started.
    fn capabilities(&self) -> Capabilities;

    /// Checks that the backend can run jobs now (daemon reachable, host up), refreshing
    /// what [`Backend::capabilities`] reports where that can change.
    async fn health(&self) -> Result<(), BackendError>;

    /// Runs `job` to its end under its limits. Must kill every process of the job on timeout,
    /// cancellation or output limit before returning, and must not panic on any job.
    async fn execute(&self, job: Job, control: JobControl) -> Result<Execution, BackendError>;

    /// Sessions on this backend ([`session`]): `None` (the default) when it cannot hold a
    /// sandbox across jobs, and pools on it refuse to open sessions.
    fn sessions(&self) -> Option<&dyn SessionBackend> {
        None
    }
}
