//! Publishing audit events on `<prefix>.audit.<tenant>.<pool>.<event>`.

use bytes::Bytes;
use openshell_protocol::{AuditEvent, Subjects};

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

/// Publishes audit events.
#[derive(Debug, Clone)]
pub struct AuditPublisher {
    nats: async_nats::Client,
    subjects: Subjects,
}

impl AuditPublisher {
    /// A publisher over `nats`.
    pub fn new(nats: async_nats::Client, subjects: Subjects) -> Self {
        Self { nats, subjects }
    }

    /// Publishes `event` without waiting for the server.
    pub async fn publish(&self, event: &AuditEvent) -> Result<(), AuditError> {
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

    /// Publishes `event` and waits until the server has it (a flush round trip).
    pub async fn publish_flushed(&self, event: &AuditEvent) -> Result<(), AuditError> {
        self.publish(event).await?;
        self.nats.flush().await.map_err(|e| AuditError {
            event: event.event.to_string(),
            job_id: event.job_id.clone(),
            subject: self.subjects.audit(&event.tenant, &event.pool, event.event),
            message: e.to_string(),
        })
    }
}
