//! The periodic health check: each pool's backend and the NATS connection, every
//! [`CHECK_INTERVAL`]. It feeds `openshell_backend_up`, `openshell_nats_connected`, `/readyz`
//! and each pool's [`PoolReadiness`], which decides whether the pool takes jobs.
//!
//! A pool is healthy when its backend answers its health check and the pool's canary (one
//! tiny job through the backend with the pool's own defaults) last passed. The canary runs when
//! a pool is first watched, whenever its backend comes back, when a job ends in a backend
//! failure (the job path asks for a check at once), and every [`CANARY_INTERVAL`]. It catches
//! what a ping does not: a missing image, limits the backend refuses, a timeout of zero.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Metrics;
use openshell_backend::Backend;

/// How often backends are checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// How often the canary runs while a pool stays healthy.
pub const CANARY_INTERVAL: Duration = Duration::from_secs(60);
/// How often the NATS connection is sampled.
pub const NATS_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How long one backend health check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest time between two checks asked for by failing jobs.
const RECHECK_MIN_GAP: Duration = Duration::from_secs(1);

/// Runs a pool's canary job: `Err` says what failed and what to do.
pub type Canary = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// One pool's backend under watch, owned by whichever check runs.
struct Watched {
    pool: String,
    backend: Arc<dyn Backend>,
    canary: Canary,
    ready: watch::Sender<bool>,
    /// When the canary last passed.
    canary_passed: Option<Instant>,
}

/// A watched pool as the readers of health see it.
struct Entry {
    pool: String,
    backend: &'static str,
    ready: watch::Receiver<bool>,
    checker: Arc<tokio::sync::Mutex<Watched>>,
}

/// Health of the worker's pools and NATS connection; cheap to clone.
#[derive(Clone)]
pub struct Health {
    nats: async_nats::Client,
    metrics: Arc<Metrics>,
    pools: Arc<Mutex<Vec<Entry>>>,
    recheck: Arc<Notify>,
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

/// One pool's readiness as its intake sees it: whether to take jobs, and a way to ask for a
/// check now (a job that failed in the backend).
#[derive(Clone)]
pub struct PoolReadiness {
    ready: watch::Receiver<bool>,
    recheck: Arc<Notify>,
}

impl PoolReadiness {
    /// A pool that is always ready (tests and tools that run no health checks).
    pub fn always() -> Self {
        let (sender, ready) = watch::channel(true);
        // The receiver keeps the last value once the sender is gone.
        drop(sender);
        Self {
            ready,
            recheck: Arc::default(),
        }
    }

    /// Whether the pool passed its last check.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the pool is ready (at once if it is).
    pub async fn ready(&mut self) {
        let _ = self.ready.wait_for(|ready| *ready).await;
    }

    /// Waits until the pool is not ready; never returns while it stays ready.
    pub async fn unready(&mut self) {
        if self.ready.wait_for(|ready| !*ready).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Asks for the pool's backend to be checked now (and its canary run).
    pub fn recheck(&self) {
        self.recheck.notify_one();
    }
}

impl Health {
    /// Watches `nats`; add pools with [`Health::watch`].
    pub fn new(nats: async_nats::Client, metrics: Arc<Metrics>) -> Self {
        Self {
            nats,
            metrics,
            pools: Arc::default(),
            recheck: Arc::default(),
        }
    }

    /// Checks `backend` of `pool` and runs its `canary` once now, then periodically once
    /// [`Health::spawn`] runs; the returned readiness follows the checks.
    pub async fn watch(
        &self,
        pool: &str,
        backend: Arc<dyn Backend>,
        canary: Canary,
    ) -> PoolReadiness {
        let (ready, receiver) = watch::channel(false);
        let kind = backend.kind();
        let mut watched = Watched {
            pool: pool.to_string(),
            backend,
            canary,
            ready,
            canary_passed: None,
        };
        check(&self.metrics, &mut watched, true).await;
        self.lock().push(Entry {
            pool: pool.to_string(),
            backend: kind,
            ready: receiver.clone(),
            checker: Arc::new(tokio::sync::Mutex::new(watched)),
        });
        PoolReadiness {
            ready: receiver,
            recheck: Arc::clone(&self.recheck),
        }
    }

    /// Ready: connected to NATS and at least one pool healthy.
    pub fn ready(&self) -> bool {
        self.nats.connection_state() == async_nats::connection::State::Connected
            && self.lock().iter().any(|entry| *entry.ready.borrow())
    }

    /// Each pool's health as last checked.
    pub fn pools(&self) -> Vec<PoolHealth> {
        self.lock()
            .iter()
            .map(|entry| PoolHealth {
                pool: entry.pool.clone(),
                backend: entry.backend.to_string(),
                healthy: *entry.ready.borrow(),
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
            let mut last_recheck = Instant::now();
            loop {
                tokio::select! {
                    _ = nats_tick.tick() => health.metrics.nats.sample(&health.nats),
                    _ = backend_tick.tick() => health.check_all(false).await,
                    () = health.recheck.notified() => {
                        // A burst of failing jobs asks many times: one check answers them all.
                        tokio::time::sleep_until(last_recheck + RECHECK_MIN_GAP).await;
                        last_recheck = Instant::now();
                        health.check_all(true).await;
                    }
                    () = stop.cancelled() => break,
                }
            }
        })
    }

    async fn check_all(&self, canary: bool) {
        let checkers: Vec<_> = self
            .lock()
            .iter()
            .map(|entry| Arc::clone(&entry.checker))
            .collect();
        for checker in checkers {
            check(&self.metrics, &mut *checker.lock().await, canary).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        // A poisoned list is still a valid list: the panicking holder only pushed or read.
        self.pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Checks one pool's backend, runs its canary when due (or `force_canary`), and publishes the
/// verdict to its readiness and the metrics.
async fn check(metrics: &Metrics, watched: &mut Watched, force_canary: bool) {
    let pool = watched.pool.as_str();
    let kind = watched.backend.kind();
    let was = *watched.ready.borrow();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, watched.backend.health()).await;
    let mut ok = match outcome {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::warn!(%pool, backend = kind, %error, "backend unhealthy: the pool takes no jobs until it recovers");
            false
        }
        Err(_) => {
            tracing::warn!(%pool, backend = kind, timeout_s = CHECK_TIMEOUT.as_secs(), "backend health check timed out: the pool takes no jobs until it answers");
            false
        }
    };
    if ok {
        let due = force_canary
            || !was
            || watched
                .canary_passed
                .is_none_or(|passed| passed.elapsed() >= CANARY_INTERVAL);
        if due {
            match (watched.canary)().await {
                Ok(()) => watched.canary_passed = Some(Instant::now()),
                Err(error) => {
                    tracing::warn!(%pool, backend = kind, %error, "canary job failed: the pool takes no jobs until it passes");
                    watched.canary_passed = None;
                    ok = false;
                }
            }
        }
    }
    if ok && !was {
        tracing::info!(%pool, backend = kind, "backend healthy: the pool takes jobs");
    }
    watched.ready.send_replace(ok);
    metrics.backends.health(pool, kind, ok);
}
