//! Egress proxy metrics: every connection attempt of a job, and the bytes it moved.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::PoolLabels;

/// Labels of connection attempts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// Pool name.
    pub pool: String,
    /// `allowed` or `denied`.
    pub outcome: &'static str,
}

/// The egress series.
#[derive(Default)]
pub struct NetworkMetrics {
    /// Connection attempts through the egress proxy, by outcome.
    pub attempts: Family<AttemptLabels, Counter>,
    /// Bytes moved through the egress proxy, both directions.
    pub bytes: Family<PoolLabels, Counter>,
}

impl NetworkMetrics {
    /// Counts one attempt of a job of `pool` that moved `bytes`.
    pub fn attempt(&self, pool: &str, allowed: bool, bytes: u64) {
        let outcome = if allowed { "allowed" } else { "denied" };
        self.attempts
            .get_or_create(&AttemptLabels {
                pool: pool.to_string(),
                outcome,
            })
            .inc();
        self.bytes
            .get_or_create(&PoolLabels {
                pool: pool.to_string(),
            })
            .inc_by(bytes);
    }

    /// Adds the series to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "egress_connections",
            "Connection attempts of jobs through the egress proxy, by outcome (allowed or denied)",
            self.attempts.clone(),
        );
        registry.register(
            "egress_bytes",
            "Bytes jobs moved through the egress proxy, both directions",
            self.bytes.clone(),
        );
    }
}
