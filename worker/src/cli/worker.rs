//! `openshell worker`: serve the configured pools until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use openshell_protocol::Subjects;
use openshell_scheduler::{PoolPolicy, RunningJobs};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::AuditPublisher;
use crate::config::{Config, Overrides};
use crate::intake;
use crate::job::{PoolRuntime, WorkerContext};
use crate::metrics::health::{Canary, Health};
use crate::metrics::{Metrics, server};
use crate::registry::BackendRegistry;
use crate::reply::NatsReplier;
use crate::service::{PoolHandle, StatusSource};
use openshell_backend::{Backend, BackendMetrics};

/// Run a worker: take jobs from NATS and run them on the configured backends.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  openshell worker                      # one pool on SANDBOX_BACKEND (default docker)\n  SANDBOX_BACKEND=none LOG_LEVEL=debug openshell worker\n  openshell worker --config /etc/openshell/worker.toml --nats nats://10.0.0.5:4222"
)]
pub struct WorkerArgs {
    /// TOML configuration file (env OPENSHELL_CONFIG).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// NATS server URL(s), comma-separated (env NATS_URL).
    #[arg(long)]
    pub nats: Option<String>,
    /// Serve a single pool on this backend, named after it (env SANDBOX_BACKEND; default docker).
    #[arg(long)]
    pub backend: Option<openshell_backend::BackendKind>,
    /// Jobs run at once per pool (env OPENSHELL_SLOTS).
    #[arg(long)]
    pub slots: Option<usize>,
    /// Worker id in results and audit events (env OPENSHELL_WORKER_ID).
    #[arg(long)]
    pub worker_id: Option<String>,
}

impl WorkerArgs {
    /// The flags as configuration overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            nats_url: self.nats.clone(),
            backend: self.backend.clone(),
            slots: self.slots,
            worker_id: self.worker_id.clone(),
        }
    }
}

/// Runs the worker until a signal, then drains.
pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let subjects = Subjects::new(config.nats.subject_prefix.clone());
    let (nats, violations) = crate::nats::connect(
        &config.nats,
        &format!("openshell-worker {}", config.worker.id),
    )
    .await?;
    crate::nats::wait_connected(&nats, &config.nats.urls).await;
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (metrics, registry) = Metrics::new();
    let metrics = Arc::new(metrics);
    let worker = WorkerContext {
        worker_id: config.worker.id.clone(),
        subjects: subjects.clone(),
        max_request_bytes: config.worker.max_request_bytes.bytes() as usize,
        running: RunningJobs::new(),
        shutdown: stop.clone(),
        metrics: Arc::clone(&metrics),
        audit: Arc::new(AuditPublisher::new(nats.clone(), subjects.clone())),
        replier: Arc::new(NatsReplier::new(nats.clone())),
    };
    let running = worker.running.clone();
    let health = Health::new(nats.clone(), Arc::clone(&metrics));
    let ready_health = health.clone();
    let ready: server::Readiness = Arc::new(move || ready_health.ready());
    let metrics_addr = server::serve(config.worker.metrics_addr, registry, ready).await?;
    tracing::info!(%metrics_addr, "metrics on http://{metrics_addr}/metrics");
    let mut intakes = Vec::new();
    let mut runtimes = Vec::new();
    let mut pool_handles = Vec::new();
    for (name, pool) in &config.pools {
        let sink: Arc<dyn openshell_backend::MetricsSink> = Arc::clone(&metrics) as _;
        let context = pool.context(name, BackendMetrics::new(name, sink));
        let backend = BackendRegistry::new()
            .build(pool, context)
            .await
            .with_context(|| format!("pool `{name}`"))?;
        metrics.pool_started(name, backend.kind(), pool.slots);
        let readiness = health
            .watch(
                name,
                Arc::clone(&backend),
                canary(&backend, pool.policy(name)),
            )
            .await;
        let runtime = Arc::new(PoolRuntime::new(
            name,
            pool.clone(),
            backend,
            readiness,
            &worker,
        ));
        pool_handles.push(PoolHandle {
            name: name.clone(),
            backend: runtime.backend().kind().to_string(),
            slots: runtime.slots().clone(),
            ceilings: pool.ceilings.clone(),
        });
        runtimes.push(Arc::clone(&runtime));
        intakes
            .push(intake::serve_pool(runtime, nats.clone(), tracker.clone(), stop.clone()).await?);
    }
    if config.durable.enabled {
        let durable = crate::durable::serve(
            &nats,
            &runtimes,
            &config.durable,
            tracker.clone(),
            stop.clone(),
        );
        intakes.extend(durable.await?);
    }
    let _health_checks = health.spawn(stop.clone());
    let status = StatusSource {
        worker_id: config.worker.id.clone(),
        pools: pool_handles,
        health,
    };
    let _service = crate::service::register(nats.clone(), &subjects, status).await?;
    let cancel_listener =
        intake::serve_cancel(nats.clone(), subjects.clone(), running.clone()).await?;
    nats.flush()
        .await
        .context("flushing subscriptions to NATS")?;
    refused_subscriptions(&violations).await?;
    tracing::info!(worker = %config.worker.id, pools = config.pools.len(), "OpenShell worker ready");

    wait_for_signal().await;
    tracing::info!(grace = %config.worker.shutdown_grace, running = running.len(), "shutting down: taking no new jobs");
    stop.cancel();
    for intake in intakes {
        let _ = intake.await;
    }
    tracker.close();
    if tokio::time::timeout(config.worker.shutdown_grace.as_duration(), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            running = running.len(),
            "grace period over: cancelling running jobs"
        );
        running.cancel_all();
        tracker.wait().await;
    }
    cancel_listener.abort();
    nats.flush().await.ok();
    tracing::info!("worker stopped");
    Ok(ExitCode::SUCCESS)
}

/// Fails when the server refused any of the worker's subscriptions: the worker would look
/// ready and never receive a job. The server reports a refusal before it answers the flush;
/// the short pause lets the report reach the connection's event handler.
async fn refused_subscriptions(violations: &crate::nats::Violations) -> anyhow::Result<()> {
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let refused: Vec<String> = violations
        .all()
        .into_iter()
        .filter(|violation| violation.to_lowercase().contains("subscription"))
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "the NATS server refused the worker's subscriptions ({}); the worker would take no jobs. \
         Grant its user subscribe on <prefix>.exec.>, <prefix>.cancel.> and (durable mode) the \
         JetStream API, as the worker user in deploy/nats/accounts.conf has",
        refused.join("; ")
    )
}

/// The pool's canary: a tiny job through `backend` under `policy`'s defaults.
fn canary(backend: &Arc<dyn Backend>, policy: PoolPolicy) -> Canary {
    let backend = Arc::clone(backend);
    Arc::new(move || {
        let (backend, policy) = (Arc::clone(&backend), policy.clone());
        Box::pin(async move {
            let capabilities = backend.capabilities();
            crate::job::canary::run(backend.as_ref(), &policy, &capabilities).await
        })
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the worker with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
