//! A started worker: what it serves, and stopping it. Stopping takes no new jobs at once,
//! gives running jobs the configured grace period, then cancels those still running.

use std::net::SocketAddr;
use std::sync::Arc;

use openshell_protocol::DurationMs;
use openshell_protocol::audit::CheckpointKind;
use openshell_scheduler::RunningJobs;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::audit::Checkpointer;

/// A running worker. Stop it with [`WorkerHandle::shutdown`] (or [`WorkerHandle::stop`] and
/// [`WorkerHandle::wait`]). Dropping it stops intake and the worker's listeners without
/// waiting for running jobs.
#[derive(Debug)]
pub struct WorkerHandle {
    pub(super) worker_id: String,
    pub(super) pools: Vec<String>,
    pub(super) metrics_addr: SocketAddr,
    pub(super) grace: DurationMs,
    pub(super) nats: async_nats::Client,
    pub(super) running: RunningJobs,
    /// The stop signal: cancelled, the worker takes no new jobs.
    pub(super) stop: CancellationToken,
    /// Cancels `stop` when the handle goes.
    pub(super) _stop_on_drop: DropGuard,
    /// The tasks running jobs.
    pub(super) tracker: TaskTracker,
    /// The tasks taking jobs (core and durable); they end once stopped.
    pub(super) intakes: Vec<JoinHandle<()>>,
    pub(super) background: Background,
    /// Signs the audit chain's checkpoints; the final one once every job has ended.
    pub(super) checkpointer: Arc<Checkpointer>,
}

/// Stops a worker from anywhere: a clone of its stop signal.
#[derive(Debug, Clone)]
pub struct Stopper(CancellationToken);

impl Stopper {
    /// Stops the worker taking jobs; the holder of its [`WorkerHandle`] drains it.
    pub fn stop(&self) {
        self.0.cancel();
    }
}

impl WorkerHandle {
    /// The worker's id, as in results and audit events.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The pools served, by name.
    pub fn pools(&self) -> &[String] {
        &self.pools
    }

    /// Where `/metrics`, `/healthz` and `/readyz` answer (the bound address, when the
    /// configuration asked for port 0).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// A way to stop the worker from another task.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Stops taking new jobs now; [`WorkerHandle::wait`] drains the running ones.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits until the worker is stopped (by [`WorkerHandle::stop`] or a [`Stopper`]), then
    /// gives running jobs the grace period, cancels those still running, and stops the
    /// listeners and the metrics endpoint.
    pub async fn wait(self) {
        self.stop.cancelled().await;
        tracing::info!(grace = %self.grace, running = self.running.len(), "shutting down: taking no new jobs");
        for intake in self.intakes {
            let _ = intake.await;
        }
        self.tracker.close();
        if tokio::time::timeout(self.grace.as_duration(), self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.running.len(),
                "grace period over: cancelling running jobs"
            );
            self.running.cancel_all();
            self.tracker.wait().await;
        }
        drop(self.background);
        match self.checkpointer.checkpoint(CheckpointKind::Final).await {
            Ok(checkpoint) => {
                tracing::info!(chain = %checkpoint.chain, seq = checkpoint.seq, "final audit checkpoint published");
            }
            Err(error) => tracing::error!(%error, "final audit checkpoint lost"),
        }
        self.nats.flush().await.ok();
        tracing::info!("worker stopped");
    }

    /// Stops taking new jobs and drains the running ones: [`WorkerHandle::stop`], then
    /// [`WorkerHandle::wait`].
    pub async fn shutdown(self) {
        self.stop();
        self.wait().await;
    }
}

/// The worker's long-lived tasks beside intake (listeners, health checks, the metrics
/// endpoint): aborted when dropped.
#[derive(Debug, Default)]
pub(super) struct Background(Vec<JoinHandle<()>>);

impl Background {
    /// Adds `task`.
    pub(super) fn push(&mut self, task: JoinHandle<()>) {
        self.0.push(task);
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.0.iter().for_each(JoinHandle::abort);
    }
}
