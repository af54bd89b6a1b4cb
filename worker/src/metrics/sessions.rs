//! Session series: open sessions by pool and tenant, lifetimes, ends, kernel restarts.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::PoolLabels;

/// Labels of open sessions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    /// Pool.
    pub pool: String,
    /// Tenant (sessions are capped per tenant and pool, so the series are too).
    pub tenant: String,
}

/// Labels of ended sessions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndLabels {
    /// Pool.
    pub pool: String,
    /// Why: `closed`, `ttl`, `idle`, `shutdown`.
    pub reason: String,
}

fn lifetime_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

/// The session series.
pub struct SessionMetrics {
    /// Sessions open now.
    pub open: Family<SessionLabels, Gauge>,
    /// Lifetimes of ended sessions, in seconds.
    pub lifetime: Family<PoolLabels, Histogram, fn() -> Histogram>,
    /// Sessions ended, by reason.
    pub ended: Family<EndLabels, Counter>,
    /// Kernel restarts (a cell timed out, was cancelled, or its interpreter died).
    pub kernel_restarts: Family<PoolLabels, Counter>,
}

impl Default for SessionMetrics {
    fn default() -> Self {
        Self {
            open: Family::default(),
            lifetime: Family::new_with_constructor(lifetime_buckets),
            ended: Family::default(),
            kernel_restarts: Family::default(),
        }
    }
}

impl SessionMetrics {
    /// Registers the series under `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sessions_open",
            "Sessions open now, by pool and tenant",
            self.open.clone(),
        );
        registry.register(
            "session_lifetime_seconds",
            "Lifetimes of ended sessions",
            self.lifetime.clone(),
        );
        registry.register(
            "sessions_ended",
            "Sessions ended, by reason",
            self.ended.clone(),
        );
        registry.register(
            "session_kernel_restarts",
            "Session kernels restarted after a timeout, cancel or crash",
            self.kernel_restarts.clone(),
        );
    }

    /// A session opened.
    pub fn opened(&self, pool: &str, tenant: &str) {
        self.open.get_or_create(&labels(pool, tenant)).inc();
    }

    /// A session ended after `lifetime`.
    pub fn closed(&self, pool: &str, tenant: &str, reason: &str, lifetime: Duration) {
        self.open.get_or_create(&labels(pool, tenant)).dec();
        self.lifetime
            .get_or_create(&pool_labels(pool))
            .observe(lifetime.as_secs_f64());
        self.ended
            .get_or_create(&EndLabels {
                pool: pool.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// A kernel of a session on `pool` restarted.
    pub fn kernel_restarted(&self, pool: &str) {
        self.kernel_restarts.get_or_create(&pool_labels(pool)).inc();
    }
}

fn labels(pool: &str, tenant: &str) -> SessionLabels {
    SessionLabels {
        pool: pool.to_string(),
        tenant: tenant.to_string(),
    }
}

fn pool_labels(pool: &str) -> PoolLabels {
    PoolLabels {
        pool: pool.to_string(),
    }
}
