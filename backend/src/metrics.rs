//! What backends tell the worker's metrics: handed to each backend, never reached globally.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Something a backend observed, for the worker's metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendEvent {
    /// A sandbox became ready for a job after `took` (container created and started).
    SandboxStarted {
        /// From asking to ready.
        took: Duration,
    },
    /// A job found no pre-started sandbox and waited for a fresh one.
    WarmPoolMissed,
    /// A job took a pre-started sandbox (with `WarmPoolMissed`, the pool's hit rate).
    WarmPoolHit,
    /// The warm pool holds `ready` sandboxes of a target of `target`.
    WarmPool {
        /// How many it keeps ready.
        target: usize,
        /// How many are ready now.
        ready: usize,
    },
    /// A job hit a limit the backend detected itself (`processes`, ...).
    LimitHit {
        /// The limit's name as in requests.
        limit: &'static str,
    },
    /// The backend's SSH connections and the channels open on them.
    SshConnections {
        /// Open connections.
        connections: usize,
        /// Open channels, over all connections.
        channels: usize,
    },
    /// A pooled SSH connection was lost and a new one opened.
    SshReconnected,
}

/// Where a pool's backend events go: the worker's Prometheus registry, or nowhere.
pub trait MetricsSink: Send + Sync + 'static {
    /// Records `event` of pool `pool`.
    fn record(&self, pool: &str, event: BackendEvent);
}

/// A backend's handle on the metrics of its pool. Cheap to clone.
#[derive(Clone)]
pub struct BackendMetrics {
    pool: Arc<str>,
    sink: Option<Arc<dyn MetricsSink>>,
}

impl BackendMetrics {
    /// Events of pool `pool`, recorded in `sink`.
    pub fn new(pool: &str, sink: Arc<dyn MetricsSink>) -> Self {
        Self {
            pool: pool.into(),
            sink: Some(sink),
        }
    }

    /// A handle that records nothing (tests, one-off commands).
    pub fn none(pool: &str) -> Self {
        Self {
            pool: pool.into(),
            sink: None,
        }
    }

    /// The pool these metrics are about.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// Records `event`.
    pub fn record(&self, event: BackendEvent) {
        if let Some(sink) = &self.sink {
            sink.record(&self.pool, event);
        }
    }
}

impl fmt::Debug for BackendMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendMetrics")
            .field("pool", &self.pool)
            .field("recorded", &self.sink.is_some())
            .finish()
    }
}
