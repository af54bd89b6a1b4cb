//! Audit events: the [`AuditSink`] the job path records them in, and its NATS implementation,
//! [`AuditPublisher`], publishing on `<prefix>.audit.<tenant>.<pool>.<event>`.
//!
//! One file each: [`publisher`] (publishing, flushed or acknowledged), [`chain`] (every event's
//! place in the worker's hash chain, assigned in publication order under one lock),
//! [`checkpoint`] (signed checkpoints of the chain, at an interval and at shutdown), [`key`]
//! (the Ed25519 signing key), [`verify`] (checking a trail: chains, checkpoints, jobs).
//!
//! In durable mode the publisher also holds a JetStream context: then
//! [`AuditSink::publish_flushed`] waits for the `OPENSHELL_AUDIT` stream's ack, so an
//! event that must precede the code is on disk before the code starts.

pub mod chain;
pub mod checkpoint;
pub mod key;
pub mod publisher;
pub mod verify;

use async_trait::async_trait;
use openshell_protocol::AuditEvent;

pub use chain::Chain;
pub use checkpoint::Checkpointer;
pub use key::{AuditKey, KeyError};
pub use publisher::AuditPublisher;

/// Where the job path records its audit events. A job's code runs only after its `received`
/// and `started` events were recorded with [`AuditSink::publish_flushed`]; the other events go
/// out with [`AuditSink::publish`], and a lost one is logged and counted, not fatal.
#[async_trait]
pub trait AuditSink: Send + Sync {
    /// Publishes `event` without waiting for it to be stored.
    async fn publish(&self, event: &AuditEvent) -> Result<(), AuditError>;

    /// Publishes `event` and returns once it is stored; an error means it may not be.
    async fn publish_flushed(&self, event: &AuditEvent) -> Result<(), AuditError>;
}

/// Why an audit event could not be published.
#[derive(Debug, thiserror::Error)]
#[error("audit event {event} for job `{job_id}` could not be published to {subject}: {message}")]
pub struct AuditError {
    /// Event type.
    pub event: String,
    /// Job id.
    pub job_id: String,
    /// Subject.
    pub subject: String,
    /// The cause.
    pub message: String,
}
