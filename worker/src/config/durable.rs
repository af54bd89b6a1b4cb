//! Settings of durable mode (JetStream work queue, stored results, persisted audit).
//!
//! | key (`[durable]`) | env | default | meaning |
//! |---|---|---|---|
//! | `enabled` | `OPENSHELL_DURABLE` | `false` | also serve the JetStream work queue |
//! | `jobs_max_age` | — | `7d` | a queued job no worker took within it is dropped |
//! | `results_max_age` | `OPENSHELL_DURABLE_RESULTS_MAX_AGE` | `24h` | how long results can be fetched by id |
//! | `audit_max_age` | `OPENSHELL_AUDIT_MAX_AGE` | `90d` | audit events older than this are removed |
//! | `audit_max_bytes` | `OPENSHELL_AUDIT_MAX_BYTES` | `1g` | the audit stream's size bound (oldest removed first) |
//! | `ack_wait` | `OPENSHELL_DURABLE_ACK_WAIT` | `30s` | a job not acked or progressed within it is redelivered |
//! | `max_deliver` | `OPENSHELL_DURABLE_MAX_DELIVER` | `3` | runs of a job that may start (counted in `OPENSHELL_ATTEMPTS`); the next delivery stores `worker_lost` |
//! | `replicas` | `OPENSHELL_DURABLE_REPLICAS` | `1` | copies of every stream and bucket in a NATS cluster: 1, 3 or 5 (3 survives the loss of any one node); a worker on a clustered server with 1 warns |

use openshell_protocol::{ByteSize, DurationMs};
use serde::{Deserialize, Serialize};

/// Durable-mode settings; see the module table for defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DurableConfig {
    /// Serve the JetStream work queue beside core request/reply.
    pub enabled: bool,
    /// Jobs-stream `max_age`.
    pub jobs_max_age: DurationMs,
    /// Results-stream `max_age`.
    pub results_max_age: DurationMs,
    /// Audit-stream `max_age`.
    pub audit_max_age: DurationMs,
    /// Audit-stream `max_bytes`.
    pub audit_max_bytes: ByteSize,
    /// Consumer `ack_wait`; in-progress acks are sent every third of it while a job runs.
    pub ack_wait: DurationMs,
    /// Runs of one job that may start; the delivery after stores verdict `worker_lost`.
    pub max_deliver: u32,
    /// Replicas of every stream and key-value bucket (1, 3 or 5).
    pub replicas: usize,
}

impl Default for DurableConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            jobs_max_age: DurationMs::secs(7 * 24 * 3600),
            results_max_age: DurationMs::secs(24 * 3600),
            audit_max_age: DurationMs::secs(90 * 24 * 3600),
            audit_max_bytes: ByteSize::gib(1),
            ack_wait: DurationMs::secs(30),
            max_deliver: 3,
            replicas: 1,
        }
    }
}
