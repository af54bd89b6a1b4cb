//! Backend-side metrics: health, start latency, warm pools, SSH connections.
//!
//! The Docker and SSH backends report [`openshell_backend::BackendEvent`]s through the handle
//! they are built with; `Metrics` turns each into these series.
//! [`super::health`] feeds `backend_up` from the periodic health check.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{PoolLabels, job_buckets};

/// Labels of per-pool backend series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// Pool name.
    pub pool: String,
    /// Backend kind (`none`, `docker`, `ssh`).
    pub backend: String,
}

/// Metrics the backends report about themselves.
pub struct BackendSeries {
    /// 1 when the last periodic health check of the pool's backend passed, else 0.
    pub up: Family<BackendLabels, Gauge>,
    /// Health checks that failed.
    pub health_failures: Family<BackendLabels, Counter>,
    /// Time from a job reaching the backend to its sandbox being ready to run it (Docker: a warm
    /// container taken, or a cold one started, with its runner attached).
    pub start_latency: Family<PoolLabels, Histogram, fn() -> Histogram>,
    /// Warm sandboxes the pool keeps ready (its target, Docker).
    pub warm_size: Family<PoolLabels, Gauge>,
    /// Warm sandboxes ready to take a job now.
    pub warm_available: Family<PoolLabels, Gauge>,
    /// Jobs that found no fitting warm sandbox and started a cold one. (A job never waits for
    /// a warm sandbox, so there is no "waiting" gauge: a miss is what a short pool costs.)
    pub warm_misses: Family<PoolLabels, Counter>,
    /// Jobs that took a warm sandbox; hits ÷ (hits + misses) is the pool's hit rate.
    pub warm_hits: Family<PoolLabels, Counter>,
    /// SSH connections open.
    pub ssh_connections: Family<PoolLabels, Gauge>,
    /// SSH channels in use.
    pub ssh_channels: Family<PoolLabels, Gauge>,
    /// SSH reconnects after a lost connection.
    pub ssh_reconnects: Family<PoolLabels, Counter>,
}

impl Default for BackendSeries {
    fn default() -> Self {
        Self::new()
    }
}

impl BackendSeries {
    /// Empty metrics.
    pub fn new() -> Self {
        Self {
            up: Family::default(),
            health_failures: Family::default(),
            start_latency: Family::new_with_constructor(job_buckets),
            warm_size: Family::default(),
            warm_available: Family::default(),
            warm_misses: Family::default(),
            warm_hits: Family::default(),
            ssh_connections: Family::default(),
            ssh_channels: Family::default(),
            ssh_reconnects: Family::default(),
        }
    }

    /// Registers every series on `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "backend_up",
            "1 when the pool's backend passed its last health check",
            self.up.clone(),
        );
        registry.register(
            "backend_health_check_failures",
            "Backend health checks that failed",
            self.health_failures.clone(),
        );
        registry.register(
            "backend_start_seconds",
            "Time from a job reaching the backend to its sandbox being ready to run it",
            self.start_latency.clone(),
        );
        registry.register(
            "warm_pool_size",
            "Warm sandboxes the pool keeps ready (its target)",
            self.warm_size.clone(),
        );
        registry.register(
            "warm_pool_available",
            "Warm sandboxes ready for a job",
            self.warm_available.clone(),
        );
        registry.register(
            "warm_pool_misses",
            "Jobs that found no fitting warm sandbox and started a cold one",
            self.warm_misses.clone(),
        );
        registry.register(
            "warm_pool_hits",
            "Jobs that took a warm sandbox (hit rate: hits / (hits + misses))",
            self.warm_hits.clone(),
        );
        registry.register(
            "ssh_connections_open",
            "SSH connections open",
            self.ssh_connections.clone(),
        );
        registry.register(
            "ssh_channels_in_use",
            "SSH channels in use",
            self.ssh_channels.clone(),
        );
        registry.register(
            "ssh_reconnects",
            "SSH reconnects after a lost connection",
            self.ssh_reconnects.clone(),
        );
    }

    /// Creates the health series of `pool`'s `backend` before its first check: not up yet, no
    /// failure counted.
    pub fn pool_started(&self, pool: &str, backend: &str) {
        let labels = BackendLabels {
            pool: pool.to_string(),
            backend: backend.to_string(),
        };
        drop(self.up.get_or_create(&labels));
        drop(self.health_failures.get_or_create(&labels));
    }

    /// Records the outcome of a health check of `pool`'s `backend`.
    pub fn health(&self, pool: &str, backend: &str, healthy: bool) {
        let labels = BackendLabels {
            pool: pool.to_string(),
            backend: backend.to_string(),
        };
        self.up.get_or_create(&labels).set(i64::from(healthy));
        if !healthy {
            self.health_failures.get_or_create(&labels).inc();
        }
    }

    /// Records how long a job's sandbox took to be ready.
    pub fn sandbox_started(&self, pool: &str, latency: Duration) {
        self.start_latency
            .get_or_create(&pool_labels(pool))
            .observe(latency.as_secs_f64());
    }

    /// Sets the warm-pool gauges of `pool`: its target `size` and the sandboxes `available`.
    pub fn warm_pool(&self, pool: &str, size: usize, available: usize) {
        let labels = pool_labels(pool);
        self.warm_size.get_or_create(&labels).set(as_gauge(size));
        self.warm_available
            .get_or_create(&labels)
            .set(as_gauge(available));
    }

    /// Counts one job of `pool` that started a cold sandbox for want of a warm one.
    pub fn warm_pool_missed(&self, pool: &str) {
        self.warm_misses.get_or_create(&pool_labels(pool)).inc();
    }

    /// Counts one job of `pool` that took a warm sandbox.
    pub fn warm_pool_hit(&self, pool: &str) {
        self.warm_hits.get_or_create(&pool_labels(pool)).inc();
    }

    /// Sets the SSH connection and channel gauges of `pool`.
    pub fn ssh(&self, pool: &str, connections: usize, channels: usize) {
        let labels = pool_labels(pool);
        self.ssh_connections
            .get_or_create(&labels)
            .set(as_gauge(connections));
        self.ssh_channels
            .get_or_create(&labels)
            .set(as_gauge(channels));
    }

    /// Counts one SSH reconnect of `pool`.
    pub fn ssh_reconnected(&self, pool: &str) {
        self.ssh_reconnects.get_or_create(&pool_labels(pool)).inc();
    }
}

fn pool_labels(pool: &str) -> PoolLabels {
    PoolLabels {
        pool: pool.to_string(),
    }
}

fn as_gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
