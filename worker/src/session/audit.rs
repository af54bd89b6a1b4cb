//! The audit sink of a session's jobs: the worker's, with the session id on every event.

use std::sync::Arc;

use async_trait::async_trait;
use openshell_protocol::AuditEvent;

use crate::audit::{AuditError, AuditSink};

/// Stamps `session` on each event, then hands it to the worker's sink.
pub struct SessionAudit {
    /// The worker's sink.
    pub inner: Arc<dyn AuditSink>,
    /// The session id.
    pub session: String,
}

impl SessionAudit {
    fn stamped(&self, event: &AuditEvent) -> AuditEvent {
        AuditEvent {
            session: Some(self.session.clone()),
            ..event.clone()
        }
    }
}

#[async_trait]
impl AuditSink for SessionAudit {
    async fn publish(&self, event: &AuditEvent) -> Result<(), AuditError> {
        self.inner.publish(&self.stamped(event)).await
    }

    async fn publish_flushed(&self, event: &AuditEvent) -> Result<(), AuditError> {
        self.inner.publish_flushed(&self.stamped(event)).await
    }
}
