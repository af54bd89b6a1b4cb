//! A session's sandbox as its pool runs jobs in it: [`Held`], and [`SessionRunner`], the
//! [`Backend`] a session's jobs go through so that they take the pool's one job path
//! (decode, admission, audit, slots, reply) unchanged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use openshell_protocol::ErrorKind;
use openshell_protocol::session::Kernel;

use openshell_backend::session::kernel::{self, KERNEL_DIED};
use openshell_backend::{
    Backend, BackendError, Capabilities, Ending, Execution, Job, JobControl, SandboxSession,
};

/// A session's sandbox and what its jobs did to it.
pub struct Held {
    /// The backend's sandbox.
    pub sandbox: Box<dyn SandboxSession>,
    /// The kernel, if the session has one.
    pub kernel: Option<Kernel>,
    /// Where the pool writes the kernel language's code (`main.py`).
    pub code_file: String,
    /// Kernel restarts so far.
    pub restarts: AtomicU64,
    /// Whether the last job restarted the kernel (read and cleared after each job).
    pub restarted: AtomicBool,
    /// Set when the sandbox was lost: the session must end.
    pub lost: AtomicBool,
}

impl Held {
    /// Whether the last job restarted the kernel; clears it.
    pub fn take_restarted(&self) -> bool {
        self.restarted.swap(false, Ordering::SeqCst)
    }
}

/// Runs a session's jobs in its held sandbox; everything else is the pool's backend's.
pub struct SessionRunner {
    /// The pool's backend (kind, capabilities).
    pub pool_backend: Arc<dyn Backend>,
    /// The session's sandbox.
    pub held: Arc<Held>,
}

#[async_trait]
impl Backend for SessionRunner {
    fn kind(&self) -> &'static str {
        self.pool_backend.kind()
    }

    fn capabilities(&self) -> Capabilities {
        self.held
            .sandbox
            .capabilities(self.pool_backend.capabilities())
    }

    async fn health(&self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn execute(&self, job: Job, control: JobControl) -> Result<Execution, BackendError> {
        let held = &self.held;
        let in_kernel = held
            .kernel
            .is_some_and(|kernel| job.language.as_deref() == Some(kernel.language()));
        let job = match held.kernel {
            Some(kernel) if in_kernel => kernel::cell(job, kernel, &held.code_file),
            _ => job,
        };
        let execution = held.sandbox.execute(job, control).await;
        match &execution {
            Err(error) if error.kind == ErrorKind::SandboxLost => {
                held.lost.store(true, Ordering::SeqCst);
            }
            Ok(done) if in_kernel => {
                let died = done.ending == Ending::OutOfMemory
                    || (done.ending == Ending::Exited && done.exit_code == Some(KERNEL_DIED));
                if died && held.sandbox.reset().await.is_err() {
                    held.lost.store(true, Ordering::SeqCst);
                }
                // A stopped cell (timeout, cancel, output limit) was reset by the sandbox.
                if died || done.ending != Ending::Exited {
                    held.restarts.fetch_add(1, Ordering::SeqCst);
                    held.restarted.store(true, Ordering::SeqCst);
                }
            }
            _ => {}
        }
        execution
    }
}
