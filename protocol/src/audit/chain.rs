//! The audit hash chain and its signed checkpoints.
//!
//! Each start of a worker process begins a **chain** (a random id). Every audit event the
//! worker publishes carries `chain`, `seq` (1, 2, 3, … with no gaps, in publication order) and
//! `prev`: the SHA-256 of the previous event's payload exactly as published (for `seq` 1,
//! [`GENESIS_HASH`]). The canonical encoding of an event is thus its own bytes: nothing is
//! re-encoded, so a verifier in any language hashes what it reads.
//!
//! At a fixed interval, and when it stops, the worker publishes an [`AuditCheckpoint`] on
//! `<prefix>.audit.checkpoint.<chain>`: the last `seq` and its hash, signed with the worker's
//! Ed25519 key over [`AuditCheckpoint::signed_bytes`]. The last event of a chain is thereby
//! vouched for too: dropping a chain's tail, or changing any event, breaks a link or a
//! signature.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `prev` of the first event of a chain: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The first line of [`AuditCheckpoint::signed_bytes`]: what is signed, and in which version.
pub const CHECKPOINT_DOMAIN: &str = "openshell-audit-checkpoint-v1";

/// Why a checkpoint was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// The interval passed.
    Interval,
    /// The worker is stopping: no event of this chain follows.
    Final,
}

impl CheckpointKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointKind::Interval => "interval",
            CheckpointKind::Final => "final",
        }
    }
}

impl fmt::Display for CheckpointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event the worker published but the audit stream did not acknowledge (an outage): the
/// worker cannot take it back, since later events are chained on it, so it declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnstoredEvent {
    /// Its `seq`.
    pub seq: u64,
    /// Its hash, which the next event's `prev` carries.
    pub hash: String,
}

/// A worker's signed statement of how far its chain reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditCheckpoint {
    /// Protocol version (1).
    pub version: u32,
    /// `interval` or `final`.
    pub checkpoint: CheckpointKind,
    /// The worker.
    pub worker_id: String,
    /// The chain.
    pub chain: String,
    /// When the chain began (the worker started).
    pub chain_started: DateTime<Utc>,
    /// When the checkpoint was made (RFC 3339, UTC).
    pub timestamp: DateTime<Utc>,
    /// The last `seq` published before it (0 when none was).
    pub seq: u64,
    /// Hex SHA-256 of that event's payload ([`GENESIS_HASH`] when `seq` is 0).
    pub hash: String,
    /// Milliseconds until the next `interval` checkpoint is due: a chain whose checkpoints
    /// stop without a `final` one ended unvouched (its worker died, or its tail was removed).
    pub interval_ms: u64,
    /// Events since the previous checkpoint that the audit stream did not acknowledge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unstored: Vec<UnstoredEvent>,
    /// The worker's Ed25519 public key, lowercase hex (32 bytes).
    pub key: String,
    /// Ed25519 signature of [`AuditCheckpoint::signed_bytes`], lowercase hex (64 bytes).
    pub signature: String,
}

impl AuditCheckpoint {
    /// The bytes the signature covers: lines joined by `\n`, with a final `\n`:
    /// [`CHECKPOINT_DOMAIN`], `checkpoint`, `worker_id`, `chain`, `chain_started` and
    /// `timestamp` (RFC 3339 with nanoseconds and `Z`), `seq`, `hash`, `interval_ms`, then one line
    /// `unstored <seq> <hash>` per unstored event, and `key`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let time = |at: &DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Nanos, true);
        let mut text = format!(
            "{CHECKPOINT_DOMAIN}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
            self.checkpoint,
            self.worker_id,
            self.chain,
            time(&self.chain_started),
            time(&self.timestamp),
            self.seq,
            self.hash,
            self.interval_ms
        );
        for unstored in &self.unstored {
            text.push_str(&format!("unstored {} {}\n", unstored.seq, unstored.hash));
        }
        text.push_str(&self.key);
        text.push('\n');
        text.into_bytes()
    }
}
