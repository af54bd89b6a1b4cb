//! Test doubles for the job path: an [`AuditSink`] and a [`Replier`] that record what they
//! get (the sink can refuse one event type), and a backend that counts the jobs it runs on an
//! unsandboxed local backend. No NATS, no Docker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use openshell_backend::{
    Backend, BackendError, BackendKind, Capabilities, Execution, Job, JobControl,
};
use openshell_backend_local::{LocalBackend, LocalSettings, SandboxMode};
use openshell_protocol::{
    AuditEvent, AuditEventType, ExecResult, LimitName, OutputChunk, Subjects,
};
use openshell_scheduler::RunningJobs;
use tokio_util::sync::CancellationToken;

use super::{PoolRuntime, WorkerContext};
use crate::audit::{AuditError, AuditSink};
use crate::config::{FilesConfig, PoolConfig};
use crate::files::FileStore;
use crate::metrics::Metrics;
use crate::metrics::health::PoolReadiness;
use crate::reply::{Replier, ReplyError};

/// The pool the fakes serve.
pub const POOL: &str = "none";
/// The tenant requests come from.
pub const TENANT: &str = "acme";

/// Records every audit event it is given; refuses the acknowledged publish of one event type.
#[derive(Default)]
pub struct FakeAudit {
    refuse: Option<AuditEventType>,
    events: Mutex<Vec<AuditEvent>>,
}

impl FakeAudit {
    /// A sink that records every event.
    pub fn working() -> Arc<Self> {
        Arc::default()
    }

    /// A sink that cannot record `event` (as an audit stream that is down or full).
    pub fn refusing(event: AuditEventType) -> Arc<Self> {
        Arc::new(Self {
            refuse: Some(event),
            events: Mutex::default(),
        })
    }

    /// The types of the events recorded, in order.
    pub fn recorded(&self) -> Vec<AuditEventType> {
        self.lock().iter().map(|event| event.event).collect()
    }

    /// The events recorded, in order.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<AuditEvent>> {
        self.events.lock().expect("audit events lock")
    }
}

#[async_trait]
impl AuditSink for FakeAudit {
    async fn publish(&self, event: &AuditEvent) -> Result<(), AuditError> {
        self.lock().push(event.clone());
        Ok(())
    }

    async fn publish_flushed(&self, event: &AuditEvent) -> Result<(), AuditError> {
        if self.refuse == Some(event.event) {
            return Err(AuditError {
                event: event.event.to_string(),
                job_id: event.job_id.clone(),
                subject: "fake.audit".to_string(),
                message: "the fake audit stream is down".to_string(),
            });
        }
        self.publish(event).await
    }
}

/// Records every result sent, with its subject.
#[derive(Default)]
pub struct FakeReplier {
    replies: Mutex<Vec<(String, ExecResult)>>,
    /// Live output chunks, and how many results had been sent when each came.
    chunks: Mutex<Vec<(String, OutputChunk, usize)>>,
}

impl FakeReplier {
    /// The results sent so far, with their subjects.
    pub fn replies(&self) -> Vec<(String, ExecResult)> {
        self.replies.lock().expect("replies lock").clone()
    }

    /// The live output chunks sent so far: subject, chunk, and the results sent before it.
    pub fn chunks(&self) -> Vec<(String, OutputChunk, usize)> {
        self.chunks.lock().expect("chunks lock").clone()
    }
}

#[async_trait]
impl Replier for FakeReplier {
    async fn reply(&self, subject: &str, result: &mut ExecResult) -> Result<(), ReplyError> {
        let sent = (subject.to_string(), result.clone());
        self.replies.lock().expect("replies lock").push(sent);
        Ok(())
    }

    async fn chunk(&self, subject: &str, chunk: &OutputChunk) -> Result<(), ReplyError> {
        let results_before = self.replies.lock().expect("replies lock").len();
        let sent = (subject.to_string(), chunk.clone(), results_before);
        self.chunks.lock().expect("chunks lock").push(sent);
        Ok(())
    }
}

/// An unsandboxed local backend that counts the jobs it was asked to run, and can lose
/// capabilities while it runs (as a Docker engine restarted without a cgroup controller).
pub struct CountingBackend {
    local: LocalBackend,
    executed: AtomicUsize,
    lost: Mutex<Vec<LimitName>>,
}

impl CountingBackend {
    /// A local backend with `sandbox = off`.
    pub fn new() -> Arc<Self> {
        let settings = LocalSettings {
            sandbox: SandboxMode::Off,
            ..LocalSettings::default()
        };
        Arc::new(Self {
            local: LocalBackend::new(settings).expect("unsandboxed local backend"),
            executed: AtomicUsize::new(0),
            lost: Mutex::new(Vec::new()),
        })
    }

    /// From now on, `limit` is no longer among the capabilities.
    pub fn lose(&self, limit: LimitName) {
        self.lost.lock().expect("lost lock").push(limit);
    }

    /// How many jobs reached [`Backend::execute`].
    pub fn executed(&self) -> usize {
        self.executed.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Backend for CountingBackend {
    fn kind(&self) -> &'static str {
        self.local.kind()
    }

    fn capabilities(&self) -> Capabilities {
        let lost = self.lost.lock().expect("lost lock");
        let mut capabilities = self.local.capabilities();
        capabilities.retain(|limit, _| !lost.contains(limit));
        capabilities
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.local.health().await
    }

    async fn execute(&self, job: Job, control: JobControl) -> Result<Execution, BackendError> {
        self.executed.fetch_add(1, Ordering::SeqCst);
        self.local.execute(job, control).await
    }
}

/// A pool runtime over the fakes, and the fakes to look at.
pub struct Fixture {
    /// The pool's runtime.
    pub runtime: Arc<PoolRuntime>,
    /// Its audit sink.
    pub audit: Arc<FakeAudit>,
    /// Its replier.
    pub replier: Arc<FakeReplier>,
    /// Its backend.
    pub backend: Arc<CountingBackend>,
}

impl Fixture {
    /// Pool [`POOL`] on a [`CountingBackend`], recording audit events in `audit`.
    pub fn new(audit: Arc<FakeAudit>) -> Self {
        let replier = Arc::new(FakeReplier::default());
        let backend = CountingBackend::new();
        let (metrics, _registry) = Metrics::new();
        let worker = WorkerContext {
            worker_id: "test-worker".to_string(),
            subjects: Subjects::new("openshell"),
            max_request_bytes: 1024 * 1024,
            running: RunningJobs::new(),
            shutdown: CancellationToken::new(),
            metrics: Arc::new(metrics),
            audit: Arc::clone(&audit) as Arc<dyn AuditSink>,
            replier: Arc::clone(&replier) as Arc<dyn Replier>,
            files: Arc::new(FileStore::new(FilesConfig::default(), None, 1)),
        };
        let config = PoolConfig::for_backend(BackendKind::Local);
        let runtime = PoolRuntime::new(
            POOL,
            config,
            Arc::clone(&backend) as Arc<dyn Backend>,
            PoolReadiness::always(),
            &worker,
        );
        Self {
            runtime: Arc::new(runtime),
            audit,
            replier,
            backend,
        }
    }

    /// A core request message of [`TENANT`] carrying `payload`, answered on `reply`.
    pub fn message(&self, payload: &[u8], reply: Option<&str>) -> async_nats::Message {
        let subject = self.runtime.subjects().exec(POOL, TENANT);
        async_nats::Message {
            subject: subject.into(),
            reply: reply.map(Into::into),
            payload: Bytes::copy_from_slice(payload),
            headers: None,
            status: None,
            description: None,
            length: payload.len(),
        }
    }
}
