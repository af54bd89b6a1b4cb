//! An SSH backend bundled with the server it talks to, for backend tests and the conformance
//! suite.

use openshell_backend::{
    Backend, BackendError, Capabilities, Execution, Job, JobControl, PoolContext,
};
use openshell_backend_ssh::SshBackend;

use super::Sshd;

/// An SSH backend together with the server it talks to, so both live as long as the test.
pub struct SshdBackend {
    /// The backend under test (declared first: fields drop in order, so its connections
    /// close before the server is killed).
    pub backend: SshBackend,
    /// The server.
    pub sshd: Sshd,
}

impl SshdBackend {
    /// A fresh server and a started backend on it; `None` when the tests must skip.
    pub async fn start() -> Option<Self> {
        let sshd = Sshd::start().await?;
        let backend = SshBackend::start(sshd.settings(), &PoolContext::bare("ssh"))
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "ssh backend did not start: {error}\nsshd log:\n{}",
                    sshd.log()
                )
            });
        Some(Self { backend, sshd })
    }
}

#[async_trait::async_trait]
impl Backend for SshdBackend {
    fn kind(&self) -> &'static str {
        self.backend.kind()
    }

    fn capabilities(&self) -> Capabilities {
        self.backend.capabilities()
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.backend.health().await
    }

    async fn execute(&self, job: Job, control: JobControl) -> Result<Execution, BackendError> {
        self.backend.execute(job, control).await
    }
}
