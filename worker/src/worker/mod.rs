//! The worker as a library: [`Worker::start`] connects to NATS, builds every configured pool
//! on its backend, serves them (core request/reply, and the durable work queue when enabled),
//! the cancel listener, the metrics endpoint and the NATS micro service, and hands back a
//! [`WorkerHandle`] to stop it. `openshell worker` (`crate::cli::worker`) is a thin caller:
//! it loads the configuration, starts the worker and waits for a signal.
//!
//! One file each: this one (the order things start in), [`pools`] (one pool: backend, health
//! watch, runtime), [`handle`] (stopping and draining), [`error`] (what can fail).

mod error;
mod handle;
mod pools;

use std::sync::{Arc, OnceLock};

use openshell_protocol::Subjects;
use openshell_scheduler::RunningJobs;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::WorkerError;
pub use handle::{Stopper, WorkerHandle};

use crate::audit::{AuditKey, AuditPublisher, Chain, Checkpointer};
use crate::config::Config;
use crate::files::FileStore;
use crate::intake;
use crate::job::WorkerContext;
use crate::metrics::health::Health;
use crate::metrics::{Metrics, server};
use crate::registry::BackendRegistry;
use crate::reply::NatsReplier;
use crate::service::StatusSource;
use handle::Background;

/// A worker: takes jobs from NATS and runs them on the configured pools' backends.
#[derive(Debug)]
pub struct Worker;

impl Worker {
    /// Starts a worker serving `config`, building its pools' backends with `registry` (the
    /// built-in kinds plus any registered there). Returns once every pool is served and the
    /// server accepted the subscriptions; the worker runs until [`WorkerHandle::shutdown`].
    /// On an error, whatever had started is stopped again.
    pub async fn start(
        config: Config,
        registry: BackendRegistry,
    ) -> Result<WorkerHandle, WorkerError> {
        // A pool naming a backend nobody registered fails now, not after NATS is reached.
        for (name, pool) in &config.pools {
            registry
                .check(&pool.backend, name)
                .map_err(|source| WorkerError::Backend {
                    pool: name.clone(),
                    source,
                })?;
        }
        let audit_key = AuditKey::configured(config.audit.key.as_deref())?;
        let subjects = Subjects::new(config.nats.subject_prefix.clone());
        let mut background = Background::default();
        // The HTTP server comes first, so that a liveness probe of `/healthz` sees a live
        // process while it waits for NATS; `/readyz` says ready only once every pool is served.
        let (metrics, registry_metrics) = Metrics::new();
        let metrics = Arc::new(metrics);
        let serving: Arc<OnceLock<Health>> = Arc::new(OnceLock::new());
        let ready_health = Arc::clone(&serving);
        let ready: server::Readiness =
            Arc::new(move || ready_health.get().is_some_and(Health::ready));
        let (metrics_addr, metrics_server) =
            server::serve(config.worker.metrics_addr, registry_metrics, ready).await?;
        background.push(metrics_server);
        tracing::info!(%metrics_addr, "metrics on http://{metrics_addr}/metrics");
        let (nats, violations) = crate::nats::connect(
            &config.nats,
            &format!("openshell-worker {}", config.worker.id),
        )
        .await?;
        crate::nats::wait_connected(&nats, &config.nats.urls).await;
        let stop = CancellationToken::new();
        // Until the handle is returned, an early return stops what had started.
        let stop_on_drop = stop.clone().drop_guard();
        let tracker = TaskTracker::new();
        let max_request_bytes = max_request_bytes(&config, &nats);
        // One chain per worker process: core and durable pools publish into it alike.
        let chain = Arc::new(Chain::new(&config.worker.id));
        let audit = AuditPublisher::new(nats.clone(), subjects.clone(), Arc::clone(&chain));
        let worker = WorkerContext {
            worker_id: config.worker.id.clone(),
            subjects: subjects.clone(),
            max_request_bytes,
            running: RunningJobs::new(),
            shutdown: stop.clone(),
            metrics: Arc::clone(&metrics),
            audit: Arc::new(audit.clone()),
            replier: Arc::new(NatsReplier::new(nats.clone())),
            files: Arc::new(FileStore::new(
                config.files.clone(),
                Some(async_nats::jetstream::new(nats.clone())),
                config.durable.replicas,
            )),
        };
        let health = Health::new(nats.clone(), Arc::clone(&metrics));
        let mut intakes = Vec::new();
        let mut runtimes = Vec::new();
        let mut pool_handles = Vec::new();
        for (name, pool) in &config.pools {
            let (runtime, status) = pools::build(name, pool, &registry, &health, &worker).await?;
            pool_handles.push(status);
            runtimes.push(Arc::clone(&runtime));
            intakes.push(
                intake::serve_pool(runtime, nats.clone(), tracker.clone(), stop.clone()).await?,
            );
        }
        intakes.push(
            crate::session::serve(&nats, &runtimes, &worker, tracker.clone(), stop.clone()).await?,
        );
        if config.durable.enabled {
            let durable = crate::durable::serve(
                &nats,
                &runtimes,
                &config.durable,
                &audit,
                tracker.clone(),
                stop.clone(),
            );
            intakes.extend(durable.await?);
        }
        let checkpointer = Arc::new(Checkpointer::new(
            chain,
            audit_key,
            nats.clone(),
            &subjects,
            config
                .durable
                .enabled
                .then(|| async_nats::jetstream::new(nats.clone())),
            config.audit.checkpoint_interval.as_duration(),
        ));
        // Stopped by dropping `background`, before the final checkpoint.
        background.push(Arc::clone(&checkpointer).spawn(CancellationToken::new()));
        background.push(health.spawn(stop.clone()));
        let readiness = health.clone();
        let status = StatusSource {
            worker_id: config.worker.id.clone(),
            pools: pool_handles,
            health,
        };
        background.push(crate::service::register(nats.clone(), &subjects, status).await?);
        background.push(
            crate::files::serve(nats.clone(), subjects.clone(), Arc::clone(&worker.files)).await?,
        );
        background.push(
            intake::serve_cancel(nats.clone(), subjects.clone(), worker.running.clone()).await?,
        );
        nats.flush().await.map_err(WorkerError::Flush)?;
        error::refused_subscriptions(&violations).await?;
        // Ready from here on: the health checks decide (NATS connected, a backend healthy).
        let _ = serving.set(readiness);
        Ok(WorkerHandle {
            worker_id: config.worker.id.clone(),
            pools: config.pools.keys().cloned().collect(),
            metrics_addr,
            grace: config.worker.shutdown_grace,
            nats,
            running: worker.running,
            stop,
            _stop_on_drop: stop_on_drop,
            tracker,
            intakes,
            background,
            checkpointer,
        })
    }
}

/// The largest request this worker takes: the configured one, lowered so that its audit
/// events fit in the server's `max_payload` (a request that could be answered but not audited
/// would not run, and one refused would leave no record).
fn max_request_bytes(config: &Config, nats: &async_nats::Client) -> usize {
    let configured = config.worker.max_request_bytes.bytes() as usize;
    let max_payload = nats.server_info().max_payload;
    if max_payload == 0 {
        // Not announced (never seen from a real server): nothing to fit in.
        return configured;
    }
    let returned = usize::try_from(config.files.max_files).unwrap_or(usize::MAX);
    let auditable = openshell_protocol::max_request_within(max_payload, returned);
    if auditable < configured {
        tracing::info!(
            configured,
            max_payload,
            accepted = auditable,
            "requests are limited to {auditable} bytes so that each one's audit event fits in the NATS server's max_payload of {max_payload} bytes; raise max_payload to accept up to {configured}"
        );
    }
    configured.min(auditable)
}
