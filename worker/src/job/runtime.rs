//! [`PoolRuntime`]: what one pool's jobs share, built from the pool's configuration and
//! backend plus the [`WorkerContext`] every pool of a worker shares.

use std::sync::Arc;

use openshell_protocol::Subjects;
use openshell_scheduler::{Dispatcher, PoolPolicy, RunningJobs, WaitingRoom};
use tokio_util::sync::CancellationToken;

use crate::audit::AuditSink;
use crate::config::PoolConfig;
use crate::files::FileStore;
use crate::metrics::Metrics;
use crate::metrics::health::PoolReadiness;
use crate::reply::Replier;
use openshell_backend::Backend;

/// What every pool of one worker shares: who the worker is, where audit events and results
/// go, the running jobs and the signal to stop.
#[derive(Clone)]
pub struct WorkerContext {
    /// This worker's id, in results and audit events.
    pub worker_id: String,
    /// Subject scheme.
    pub subjects: Subjects,
    /// Largest request accepted, in bytes.
    pub max_request_bytes: usize,
    /// Running jobs, shared with the cancel listener.
    pub running: RunningJobs,
    /// Cancelled when the worker stops taking jobs.
    pub shutdown: CancellationToken,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where audit events go.
    pub audit: Arc<dyn AuditSink>,
    /// Where core results go.
    pub replier: Arc<dyn Replier>,
    /// Where returned files go.
    pub files: Arc<FileStore>,
}

/// Everything a pool needs to run jobs; shared by all its in-flight jobs. A clone shares the
/// backend, slots, waiting room and running jobs.
#[derive(Clone)]
pub struct PoolRuntime {
    pub(super) name: String,
    pub(super) config: PoolConfig,
    /// Admission policy derived from `config`.
    pub(super) policy: PoolPolicy,
    pub(super) backend: Arc<dyn Backend>,
    /// The pool's slots, handed to waiting jobs by priority and tenant turns within quotas.
    pub(super) slots: Dispatcher,
    /// Bounds the core requests held before they get a slot.
    pub(super) waiting: WaitingRoom,
    /// Whether the pool takes jobs (its backend and canary passed their last check).
    pub(super) readiness: PoolReadiness,
    pub(super) running: RunningJobs,
    pub(super) audit: Arc<dyn AuditSink>,
    pub(super) replier: Arc<dyn Replier>,
    pub(super) files: Arc<FileStore>,
    pub(super) subjects: Subjects,
    pub(super) worker_id: String,
    pub(super) max_request_bytes: usize,
    pub(super) shutdown: CancellationToken,
    pub(super) metrics: Arc<Metrics>,
}

impl PoolRuntime {
    /// Pool `name` configured by `config`, running jobs on `backend` while `readiness` says
    /// so; its policy, slots and waiting room come from `config`. What the backend can
    /// enforce is asked of it for every job, since it changes with the backend's health.
    pub fn new(
        name: &str,
        config: PoolConfig,
        backend: Arc<dyn Backend>,
        readiness: PoolReadiness,
        worker: &WorkerContext,
    ) -> Self {
        Self {
            name: name.to_string(),
            policy: config.policy(name),
            slots: Dispatcher::new(config.slots, config.quotas()),
            waiting: WaitingRoom::new(config.waiting_limits()),
            config,
            backend,
            readiness,
            running: worker.running.clone(),
            audit: Arc::clone(&worker.audit),
            replier: Arc::clone(&worker.replier),
            files: Arc::clone(&worker.files),
            subjects: worker.subjects.clone(),
            worker_id: worker.worker_id.clone(),
            max_request_bytes: worker.max_request_bytes,
            shutdown: worker.shutdown.clone(),
            metrics: Arc::clone(&worker.metrics),
        }
    }

    /// The same pool (same backend, slots and running jobs) recording its audit events in
    /// `audit`: durable mode's, which waits for the audit stream's ack.
    pub fn with_audit(&self, audit: Arc<dyn AuditSink>) -> Self {
        let mut runtime = self.clone();
        runtime.audit = audit;
        runtime
    }

    /// The same pool (same slots, running jobs and audit) running its jobs on `backend`: a
    /// session's, which runs them in the session's sandbox. That sandbox was made without
    /// network, so jobs asking for network (the pool's or egress rules) are refused.
    pub fn with_backend(&self, backend: Arc<dyn Backend>) -> Self {
        let mut runtime = self.clone();
        runtime.backend = backend;
        runtime.policy.allow_network = false;
        runtime.policy.egress.clear();
        runtime
    }

    /// Pool name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool's configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The pool's backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The pool's slots.
    pub fn slots(&self) -> &Dispatcher {
        &self.slots
    }

    /// Where core requests wait for a slot.
    pub fn waiting(&self) -> &WaitingRoom {
        &self.waiting
    }

    /// Whether the pool takes jobs now, and a way to wait for a change.
    pub fn readiness(&self) -> &PoolReadiness {
        &self.readiness
    }

    /// The worker's running jobs.
    pub fn running(&self) -> &RunningJobs {
        &self.running
    }

    /// Subject scheme.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Where results go.
    pub fn replier(&self) -> &dyn Replier {
        self.replier.as_ref()
    }
}
