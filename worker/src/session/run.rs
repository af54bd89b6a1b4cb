//! A job in a session: one at a time, through the pool's job path, stamped with the session.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::Message;
use openshell_protocol::audit::AuditContext;
use openshell_protocol::decode::salvage_id;
use openshell_protocol::{AuditEvent, ErrorInfo, ErrorKind, ExecResult};

use super::{Session, Sessions};
use crate::job::Waiting;
use crate::job::trace;

impl Sessions {
    /// Runs the job in `message` in `tenant`'s session `id` and replies with its result.
    pub(super) async fn run(self: &Arc<Self>, tenant: &str, id: &str, message: Message) {
        let Some(reply) = message.reply.clone() else {
            tracing::warn!(session = %id, "a session job without a reply subject was dropped");
            return;
        };
        let job_id = salvage_id(&message.payload);
        if let Err(refused) = self.subjects.check_reply(tenant, job_id.as_deref(), &reply) {
            tracing::warn!(session = %id, %tenant, "session job refused: {refused}");
            return;
        }
        let Some(session) = self.find(tenant, id) else {
            let error = ErrorInfo::new(
                ErrorKind::NotFound,
                format!(
                    "tenant `{tenant}` has no session `{id}` on this worker: it was closed or expired; open a new one"
                ),
            );
            self.audit_refusal(
                tenant,
                super::serve::NO_POOL,
                Some(id),
                &message.payload,
                &error,
            )
            .await;
            let mut result = ExecResult::failed(job_id.unwrap_or_default(), error);
            result.tenant = tenant.to_string();
            result.worker_id.clone_from(&self.worker_id);
            result.session = Some(id.to_string());
            let _ = self.reply_result(&reply, &mut result).await;
            return;
        };
        let Ok(turn) = session.turn.try_lock() else {
            self.busy(&session, &message, job_id, &reply).await;
            return;
        };
        session.touch();
        let traceparent = trace::from_header(&message);
        let processed = session
            .runtime
            .process(tenant, &message.payload, traceparent, Waiting::Unbounded)
            .await;
        let mut result = processed.result.clone();
        result.session = Some(session.id.clone());
        result.kernel_restarted = session.held.take_restarted();
        if result.kernel_restarted {
            self.metrics.sessions.kernel_restarted(&session.pool);
        }
        session.jobs.fetch_add(1, Ordering::SeqCst);
        session.touch();
        drop(turn);
        if let Err(error) = self.reply_result(&reply, &mut result).await {
            tracing::error!(%error, session = %id, "could not publish a session job's result");
        }
        session.runtime.record_processed(&processed);
        if session.held.lost.load(Ordering::SeqCst) {
            tracing::warn!(session = %id, "the session's sandbox was lost; closing the session");
            self.end(
                &session,
                openshell_protocol::session::CloseReason::Lost,
                true,
            )
            .await;
        }
    }

    /// Refuses a job sent while another runs: `session_busy`, audited as `rejected`.
    async fn busy(&self, session: &Session, message: &Message, id: Option<String>, reply: &str) {
        let error = ErrorInfo::new(
            ErrorKind::SessionBusy,
            format!(
                "session `{}` is running another job: send this one when that one's result came",
                session.id
            ),
        );
        let id = id.unwrap_or_default();
        let context = AuditContext {
            tenant: session.tenant.clone(),
            pool: session.pool.clone(),
            backend: session.runtime.backend().kind().to_string(),
            worker_id: self.worker_id.clone(),
            traceparent: None,
        };
        let mut event = AuditEvent::rejected_raw(&id, &message.payload, error.clone(), &context);
        event.session = Some(session.id.clone());
        if let Err(failure) = self.audit.publish(&event).await {
            tracing::error!(%failure, "could not audit a refused session job");
        }
        let mut result = ExecResult::failed(id, error);
        result.tenant.clone_from(&session.tenant);
        result.pool.clone_from(&session.pool);
        result.worker_id.clone_from(&self.worker_id);
        result.session = Some(session.id.clone());
        let _ = self.reply_result(reply, &mut result).await;
    }

    async fn reply_result(
        &self,
        reply: &str,
        result: &mut ExecResult,
    ) -> Result<(), crate::reply::ReplyError> {
        self.replier.reply(reply, result).await
    }
}
