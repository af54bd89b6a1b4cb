//! Ending a session: asked for, expired, lost or at shutdown. The sandbox is destroyed like a
//! job's, the end audited, and the owner told when it did not ask.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use openshell_protocol::session::{CloseReason, SessionClosed};
use openshell_protocol::{AuditEvent, AuditEventType, ErrorInfo, ErrorKind, PROTOCOL_VERSION};

use super::open::remaining;
use super::{Session, Sessions};

impl Sessions {
    /// Closes `tenant`'s session `id` on its request, once its running job (if any) ended.
    pub(super) async fn close(&self, tenant: &str, id: &str) -> Result<SessionClosed, ErrorInfo> {
        let session = self.find(tenant, id).ok_or_else(|| {
            ErrorInfo::new(
                ErrorKind::NotFound,
                format!("tenant `{tenant}` has no session `{id}` on this worker: it was closed or expired"),
            )
        })?;
        Ok(self.end(&session, CloseReason::Closed, false).await)
    }

    /// Ends `session` for `reason`: waits for its running job, removes it, destroys its
    /// sandbox, audits the end and (when `tell`) publishes it to its owner.
    pub(super) async fn end(
        &self,
        session: &Arc<Session>,
        reason: CloseReason,
        tell: bool,
    ) -> SessionClosed {
        let turn = session.turn.lock().await;
        let removed = self
            .table()
            .sessions
            .remove(&(session.tenant.clone(), session.id.clone()))
            .is_some();
        if let Err(error) = session.held.sandbox.close().await {
            tracing::error!(%error, session = %session.id, "could not destroy the session's sandbox; the backend's sweep removes it");
        }
        drop(turn);
        let closed = SessionClosed {
            version: PROTOCOL_VERSION,
            session: session.id.clone(),
            reason,
            jobs: session.jobs.load(Ordering::SeqCst),
            kernel_restarts: session.held.restarts.load(Ordering::SeqCst),
            lifetime_ms: u64::try_from(session.opened.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        if !removed {
            // Another path ended it first and did the rest.
            return closed;
        }
        let event_type = match reason {
            CloseReason::Ttl | CloseReason::Idle => AuditEventType::SessionExpired,
            CloseReason::Closed | CloseReason::Shutdown | CloseReason::Lost => {
                AuditEventType::SessionClosed
            }
        };
        let context = self.context(
            &session.tenant,
            &session.pool,
            session.runtime.backend().kind(),
        );
        let mut event = AuditEvent::for_session(event_type, &session.id, &session.limits, &context);
        event.error = Some(ErrorInfo::new(
            ErrorKind::Cancelled,
            format!(
                "session ended: {}; {} job(s), {} kernel restart(s)",
                reason.as_str(),
                closed.jobs,
                closed.kernel_restarts
            ),
        ));
        if let Err(error) = self.audit.publish_flushed(&event).await {
            tracing::error!(%error, session = %session.id, "could not audit the end of a session");
        }
        self.metrics.sessions.closed(
            &session.pool,
            &session.tenant,
            reason.as_str(),
            session.opened.elapsed(),
        );
        if tell {
            let subject = self.subjects.session_ended(&session.tenant, &session.id);
            if let Ok(payload) = serde_json::to_vec(&closed) {
                let _ = self.nats.publish(subject, payload.into()).await;
            }
        }
        tracing::info!(session = %session.id, tenant = %session.tenant, reason = reason.as_str(), jobs = closed.jobs, "session ended");
        closed
    }

    /// Ends every session whose ttl or idle time passed.
    pub(super) async fn expire(&self) {
        let now = Instant::now();
        let due: Vec<(Arc<Session>, CloseReason)> = self
            .table()
            .sessions
            .values()
            .filter(|session| session.turn.try_lock().is_ok())
            .filter_map(|session| {
                let left = remaining(now, session.expires, session.idle_since(), session.idle);
                if !left.is_zero() {
                    return None;
                }
                let reason = if now >= session.expires {
                    CloseReason::Ttl
                } else {
                    CloseReason::Idle
                };
                Some((Arc::clone(session), reason))
            })
            .collect();
        for (session, reason) in due {
            self.end(&session, reason, true).await;
        }
    }

    /// Ends every session: the worker is stopping.
    pub(super) async fn end_all(&self) {
        let all: Vec<Arc<Session>> = self.table().sessions.values().cloned().collect();
        for session in all {
            self.end(&session, CloseReason::Shutdown, true).await;
        }
    }
}
