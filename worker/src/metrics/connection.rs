//! NATS connection metrics: state, reconnects, JetStream pending and redeliveries.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::PoolLabels;

/// Metrics about the worker's NATS connection.
#[derive(Default)]
pub struct NatsMetrics {
    /// 1 while connected to a NATS server, else 0.
    pub connected: Gauge,
    /// Connections re-established after the first.
    pub reconnects: Counter,
    /// Messages a JetStream consumer has not delivered yet, by pool (durable mode).
    pub jetstream_pending: Family<PoolLabels, Gauge>,
    /// JetStream messages delivered more than once, by pool (durable mode).
    pub jetstream_redeliveries: Family<PoolLabels, Counter>,
    connects_seen: std::sync::atomic::AtomicU64,
}

impl NatsMetrics {
    /// Registers every series on `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "nats_connected",
            "1 while connected to a NATS server",
            self.connected.clone(),
        );
        registry.register(
            "nats_reconnects",
            "NATS connections re-established after the first",
            self.reconnects.clone(),
        );
        registry.register(
            "jetstream_pending_messages",
            "JetStream messages not yet delivered to this pool's consumer",
            self.jetstream_pending.clone(),
        );
        registry.register(
            "jetstream_redeliveries",
            "JetStream messages delivered more than once",
            self.jetstream_redeliveries.clone(),
        );
    }

    /// Samples `client`: connection state, and reconnects from its connect count.
    pub fn sample(&self, client: &async_nats::Client) {
        use std::sync::atomic::Ordering;
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        self.connected.set(i64::from(connected));
        let connects = client.statistics().connects.load(Ordering::Relaxed);
        let seen = self.connects_seen.swap(connects, Ordering::Relaxed);
        // The first connect is not a reconnect.
        let new = connects.saturating_sub(seen.max(1));
        if new > 0 {
            self.reconnects.inc_by(new);
        }
    }

    /// Sets the JetStream pending count of `pool`'s consumer.
    pub fn pending(&self, pool: &str, messages: u64) {
        self.jetstream_pending
            .get_or_create(&PoolLabels {
                pool: pool.to_string(),
            })
            .set(i64::try_from(messages).unwrap_or(i64::MAX));
    }

    /// Counts a redelivered JetStream message of `pool`.
    pub fn redelivered(&self, pool: &str) {
        self.jetstream_redeliveries
            .get_or_create(&PoolLabels {
                pool: pool.to_string(),
            })
            .inc();
    }
}
