//! An example backend written outside the backend crates: every job runs on an inner
//! backend (here the local one) at the lowest CPU priority, through `nice -n 19`, so batch
//! pools never slow interactive ones on a shared host.
//!
//! What it shows: implementing [`Backend`] (kind, capabilities, health, execute), passing the
//! conformance suite with one line (`tests/conformance.rs`), and being registered with a
//! worker under its own kind (`ARCHITECTURE.md`, "Adding a backend").

use async_trait::async_trait;
use openshell_backend::{Backend, BackendError, Capabilities, Execution, Job, JobControl};

/// The kind pools name in `backend = "nice"`.
pub const KIND: &str = "nice";

/// The program that lowers the priority; it execs the job's own program, so exit codes,
/// signals and the process tree are the job's.
const NICE: [&str; 3] = ["nice", "-n", "19"];

/// Runs each job of `inner` at niceness 19.
#[derive(Debug)]
pub struct NiceBackend<B> {
    inner: B,
}

impl<B: Backend> NiceBackend<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl<B: Backend> Backend for NiceBackend<B> {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.inner.health().await
    }

    async fn execute(&self, mut job: Job, control: JobControl) -> Result<Execution, BackendError> {
        let argv = std::mem::take(&mut job.argv);
        job.argv = NICE.iter().map(ToString::to_string).chain(argv).collect();
        self.inner.execute(job, control).await
    }
}
