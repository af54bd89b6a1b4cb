//! The session subjects: opens in each pool's queue group, jobs and closes of this worker's
//! own sessions, the expiry tick, and closing everything when the worker stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Message, Subscriber};
use futures::StreamExt;
use futures::stream::select_all;
use openshell_protocol::session::SessionError;
use openshell_protocol::{AuditEvent, ErrorInfo};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Sessions, Table, worker_token};
use crate::intake::IntakeError;
use crate::job::{PoolRuntime, WorkerContext};

/// The pool token of audit events of refused session requests that name no pool.
pub const NO_POOL: &str = "_session";

/// How often sessions are checked for expiry.
const EXPIRY_TICK: Duration = Duration::from_millis(250);

/// Serves sessions for `pools` until `stop`; then ends every session (audited, owners told)
/// before the returned task finishes.
pub async fn serve(
    nats: &async_nats::Client,
    pools: &[Arc<PoolRuntime>],
    worker: &WorkerContext,
    tracker: TaskTracker,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, IntakeError> {
    let subjects = worker.subjects.clone();
    let token = worker_token(&worker.worker_id);
    let sessions = Arc::new(Sessions {
        nats: nats.clone(),
        subjects: subjects.clone(),
        worker_id: worker.worker_id.clone(),
        token: token.clone(),
        audit: Arc::clone(&worker.audit),
        replier: Arc::clone(&worker.replier),
        metrics: Arc::clone(&worker.metrics),
        pools: pools
            .iter()
            .map(|pool| (pool.name().to_string(), Arc::clone(pool)))
            .collect::<HashMap<_, _>>(),
        table: Mutex::new(Table::default()),
    });
    let mut subscriptions: Vec<Subscriber> = Vec::new();
    for pool in pools {
        let subject = format!("{}.session.open.{}.*", subjects.prefix(), pool.name());
        subscriptions
            .push(subscribe(nats, subject, Some(subjects.queue_group(pool.name()))).await?);
    }
    for verb in ["run", "close"] {
        let subject = subjects.session_worker_wildcard(verb, &token);
        subscriptions.push(subscribe(nats, subject, None).await?);
    }
    Ok(tokio::spawn(async move {
        let mut messages = select_all(subscriptions);
        let mut tick = tokio::time::interval(EXPIRY_TICK);
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => {
                        let sessions = Arc::clone(&sessions);
                        tracker.spawn(async move { sessions.dispatch(message).await });
                    }
                    None => break,
                },
                _ = tick.tick() => sessions.expire().await,
                () = stop.cancelled() => break,
            }
        }
        drop(messages);
        sessions.end_all().await;
    }))
}

async fn subscribe(
    nats: &async_nats::Client,
    subject: String,
    queue: Option<String>,
) -> Result<Subscriber, IntakeError> {
    let subscribed = match queue {
        Some(queue) => nats.queue_subscribe(subject.clone(), queue).await,
        None => nats.subscribe(subject.clone()).await,
    };
    subscribed.map_err(|error| IntakeError {
        subject,
        message: error.to_string(),
    })
}

impl Sessions {
    /// Routes one message by its subject.
    async fn dispatch(self: Arc<Self>, message: Message) {
        let subject = message.subject.to_string();
        if let Some((pool, tenant)) = self.subjects.parse_session_open(&subject) {
            let answer = self.open(pool, tenant, &message.payload).await;
            if let Err(error) = &answer {
                tracing::info!(%pool, %tenant, kind = %error.kind, "session open refused: {}", error.message);
                self.metrics.rejected(pool, error.kind.as_str());
                self.audit_refusal(tenant, pool, None, &message.payload, error)
                    .await;
            }
            self.answer(tenant, &message, answer).await;
        } else if let Some((tenant, id)) = self.subjects.parse_session("run", &self.token, &subject)
        {
            let (tenant, id) = (tenant.to_string(), id.to_string());
            self.run(&tenant, &id, message).await;
        } else if let Some((tenant, id)) =
            self.subjects.parse_session("close", &self.token, &subject)
        {
            let answer = self.close(tenant, id).await;
            if let Err(error) = &answer {
                self.audit_refusal(tenant, NO_POOL, Some(id), &message.payload, error)
                    .await;
            }
            self.answer(tenant, &message, answer).await;
        }
    }

    /// Audits a refused session request as `rejected` (no job id; `session` when it named one),
    /// under `pool`, or [`NO_POOL`] for a job or close whose session was not found.
    pub(super) async fn audit_refusal(
        &self,
        tenant: &str,
        pool: &str,
        session: Option<&str>,
        raw: &[u8],
        error: &ErrorInfo,
    ) {
        let backend = self
            .pools
            .get(pool)
            .map(|runtime| runtime.backend().kind())
            .unwrap_or_default();
        let context = self.context(tenant, pool, backend);
        let mut event = AuditEvent::rejected_raw("", raw, error.clone(), &context);
        event.session = session.map(str::to_string);
        if let Err(failure) = self.audit.publish(&event).await {
            tracing::error!(%failure, "could not audit a refused session request");
        }
    }

    /// Sends `answer` (or its error as a [`SessionError`]) to the message's reply subject, if
    /// `tenant` may read it.
    async fn answer<T: Serialize>(
        &self,
        tenant: &str,
        message: &Message,
        answer: Result<T, ErrorInfo>,
    ) {
        let Some(reply) = &message.reply else {
            return;
        };
        if let Err(refused) = self.subjects.check_reply(tenant, None, reply) {
            tracing::warn!(%tenant, "session answer not sent: {refused}");
            return;
        }
        let payload = match answer {
            Ok(answer) => serde_json::to_vec(&answer),
            Err(error) => serde_json::to_vec(&SessionError::new(error)),
        };
        match payload {
            Ok(payload) => {
                if let Err(error) = self.nats.publish(reply.clone(), payload.into()).await {
                    tracing::error!(%error, "could not answer a session request");
                }
            }
            Err(error) => tracing::error!(%error, "could not encode a session answer"),
        }
    }
}
