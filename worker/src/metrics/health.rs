//! The periodic health check: each pool's backend and the NATS connection, every
//! [`CHECK_INTERVAL`]. It feeds `openshell_backend_up`, `openshell_nats_connected` and `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Metrics;
use crate::backend::Backend;

/// How often backends are checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// How often the NATS connection is sampled.
pub const NATS_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How long one backend health check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// One pool's backend under watch.
struct Watched {
    pool: String,
    backend: Arc<dyn Backend>,
    healthy: Arc<AtomicBool>,
}

/// Health of the worker's pools and NATS connection; cheap to clone.
#[derive(Clone)]
pub struct Health {
    nats: async_nats::Client,
    metrics: Arc<Metrics>,
    pools: Arc<Mutex<Vec<Watched>>>,
}

/// A pool's health as last checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHealth {
    /// Pool name.
    pub pool: String,
    /// Backend kind.
    pub backend: String,
    /// Whether the last check passed.
    pub healthy: bool,
}

impl Health {
    /// Watches `nats`; add pools with [`Health::watch`].
    pub fn new(nats: async_nats::Client, metrics: Arc<Metrics>) -> Self {
        Self {
            nats,
            metrics,
            pools: Arc::default(),
        }
    }

    /// Checks `backend` of `pool` once now, then periodically once [`Health::spawn`] runs.
    pub async fn watch(&self, pool: &str, backend: Arc<dyn Backend>) {
        let healthy = Arc::new(AtomicBool::new(false));
        check(&self.metrics, pool, backend.as_ref(), &healthy).await;
        let watched = Watched {
            pool: pool.to_string(),
            backend,
            healthy,
        };
        self.lock().push(watched);
    }

    /// Ready: connected to NATS and at least one backend healthy.
    pub fn ready(&self) -> bool {
        self.nats.connection_state() == async_nats::connection::State::Connected
            && self
                .lock()
                .iter()
                .any(|watched| watched.healthy.load(Ordering::Relaxed))
    }

    /// Each pool's health as last checked.
    pub fn pools(&self) -> Vec<PoolHealth> {
        self.lock()
            .iter()
            .map(|watched| PoolHealth {
                pool: watched.pool.clone(),
                backend: watched.backend.kind().to_string(),
                healthy: watched.healthy.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Runs the periodic checks until `stop` fires.
    pub fn spawn(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let health = self.clone();
        tokio::spawn(async move {
            let mut nats_tick = tokio::time::interval(NATS_SAMPLE_INTERVAL);
            let mut backend_tick = tokio::time::interval(CHECK_INTERVAL);
            backend_tick.tick().await;
            loop {
                tokio::select! {
                    _ = nats_tick.tick() => health.metrics.nats.sample(&health.nats),
                    _ = backend_tick.tick() => health.check_all().await,
                    () = stop.cancelled() => break,
                }
            }
        })
    }

    async fn check_all(&self) {
        let pools: Vec<_> = self
            .lock()
            .iter()
            .map(|watched| {
                (
                    watched.pool.clone(),
                    Arc::clone(&watched.backend),
                    Arc::clone(&watched.healthy),
                )
            })
            .collect();
        for (pool, backend, healthy) in pools {
            check(&self.metrics, &pool, backend.as_ref(), &healthy).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watched>> {
        // A poisoned list is still a valid list: the panicking holder only pushed or read.
        self.pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn check(metrics: &Metrics, pool: &str, backend: &dyn Backend, healthy: &AtomicBool) {
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, backend.health()).await;
    let ok = matches!(outcome, Ok(Ok(())));
    let was = healthy.swap(ok, Ordering::Relaxed);
    match outcome {
        Ok(Ok(())) if !was => tracing::info!(%pool, backend = backend.kind(), "backend healthy"),
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%pool, backend = backend.kind(), %error, "backend unhealthy; its jobs will fail until it recovers")
        }
        Err(_) => tracing::warn!(
            %pool,
            backend = backend.kind(),
            timeout_s = CHECK_TIMEOUT.as_secs(),
            "backend health check timed out; its jobs will fail until it answers"
        ),
    }
    metrics.backends.health(pool, backend.kind(), ok);
}
