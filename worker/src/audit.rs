//! Audit events: the [`AuditSink`] the job path records them in, and its NATS implementation,
//! [`AuditPublisher`], publishing on `<prefix>.audit.<tenant>.<pool>.<event>`.
//!
//! In durable mode the publisher also holds a JetStream context: then
//! [`AuditSink::publish_flushed`] waits for the `OPENSHELL_AUDIT` stream's ack, so an
//! event that must precede the code is on disk before the code starts.

use async_trait::async_trait;
use bytes::Bytes;
use openshell_protocol::{AuditEvent, Subjects};

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

/// Publishes audit events to NATS: the worker's [`AuditSink`].
#[derive(Debug, Clone)]
pub struct AuditPublisher {
    nats: async_nats::Client,
    subjects: Subjects,
    jetstream: Option<async_nats::jetstream::Context>,
}

impl AuditPublisher {
    /// A publisher over `nats`.
    pub fn new(nats: async_nats::Client, subjects: Subjects) -> Self {
        Self {
            nats,
            subjects,
            jetstream: None,
        }
    }

    /// This publisher, with [`AuditSink::publish_flushed`] waiting for a JetStream ack.
    pub fn with_jetstream(mut self, jetstream: async_nats::jetstream::Context) -> Self {
        self.jetstream = Some(jetstream);
        self
    }
}

#[async_trait]
impl AuditSink for AuditPublisher {
    /// Publishes `event` without waiting for the server.
    async fn publish(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let subject = self.subjects.audit(&event.tenant, &event.pool, event.event);
        let error = |message: String| AuditError {
            event: event.event.to_string(),
            job_id: event.job_id.clone(),
            subject: subject.clone(),
            message,
        };
        let payload = serde_json::to_vec(event).map_err(|e| error(e.to_string()))?;
        self.nats
            .publish(subject.clone(), Bytes::from(payload))
            .await
            .map_err(|e| error(e.to_string()))
    }

    /// Publishes `event` and waits until the server has it: a flush round trip, or with
    /// JetStream the audit stream's ack (no stream, or a full one, is an error).
    async fn publish_flushed(&self, event: &AuditEvent) -> Result<(), AuditError> {
        if let Some(jetstream) = &self.jetstream {
            return self.publish_acked(jetstream, event).await;
        }
        self.publish(event).await?;
        self.nats.flush().await.map_err(|e| AuditError {
            event: event.event.to_string(),
            job_id: event.job_id.clone(),
            subject: self.subjects.audit(&event.tenant, &event.pool, event.event),
            message: e.to_string(),
        })
    }
}

impl AuditPublisher {
    async fn publish_acked(
        &self,
        jetstream: &async_nats::jetstream::Context,
        event: &AuditEvent,
    ) -> Result<(), AuditError> {
        let subject = self.subjects.audit(&event.tenant, &event.pool, event.event);
        let error = |message: String| AuditError {
            event: event.event.to_string(),
            job_id: event.job_id.clone(),
            subject: subject.clone(),
            message: format!(
                "{message}; is the OPENSHELL_AUDIT stream there and below its limits (nats stream info OPENSHELL_AUDIT)?"
            ),
        };
        let payload = serde_json::to_vec(event).map_err(|e| error(e.to_string()))?;
        jetstream
            .publish(subject.clone(), Bytes::from(payload))
            .await
            .map_err(|e| error(e.to_string()))?
            .await
            .map_err(|e| error(e.to_string()))?;
        Ok(())
    }
}
