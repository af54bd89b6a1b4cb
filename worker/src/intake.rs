//! NATS intake: one queue subscription per pool, plus the cancel listener; and the W3C
//! `traceparent` a request brings (NATS header first, request field as the fallback).

use std::sync::Arc;

use async_nats::Message;
use futures::StreamExt;
use openshell_protocol::audit::AuditContext;
use openshell_protocol::request::is_valid_traceparent;
use openshell_protocol::{ExecRequest, Subjects};
use openshell_scheduler::RunningJobs;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::job::PoolRuntime;

/// Why intake could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot subscribe to {subject}: {message}; check the NATS permissions of the worker's user"
)]
pub struct IntakeError {
    /// Subject.
    pub subject: String,
    /// The cause.
    pub message: String,
}

/// Subscribes `pool` to its request subject in its queue group and handles each request in
/// a task on `tracker`, until `stop` fires. Pending messages are drained, not dropped.
pub async fn serve_pool(
    pool: Arc<PoolRuntime>,
    tracker: TaskTracker,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, IntakeError> {
    let subject = pool.subjects.exec_wildcard(&pool.name);
    let queue = pool.subjects.queue_group(&pool.name);
    let mut subscription = pool
        .nats
        .queue_subscribe(subject.clone(), queue)
        .await
        .map_err(|error| IntakeError {
            subject: subject.clone(),
            message: error.to_string(),
        })?;
    tracing::info!(pool = %pool.name, backend = pool.backend.kind(), %subject, slots = pool.slots.total(), "serving pool");
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                message = subscription.next() => match message {
                    Some(message) => admit_waiting(&pool, &tracker, message).await,
                    None => break,
                },
                () = stop.cancelled() => {
                    // Stop new deliveries, then handle what the server already sent us.
                    let _ = subscription.unsubscribe().await;
                    while let Ok(Some(message)) = tokio::time::timeout(std::time::Duration::from_millis(200), subscription.next()).await {
                        admit_waiting(&pool, &tracker, message).await;
                    }
                    break;
                }
            }
        }
    }))
}

/// Gives `message` a seat in its pool's waiting room and handles it in a task, or refuses it
/// as `overloaded` right here: refusing is cheap, and doing it in line keeps a flood from
/// turning into as many tasks.
async fn admit_waiting(pool: &Arc<PoolRuntime>, tracker: &TaskTracker, message: Message) {
    match pool.waiting.try_enter(&pool.tenant_of(&message)) {
        Ok(seat) => {
            tracker.spawn(Arc::clone(pool).handle(message, seat));
        }
        Err(full) => pool.overloaded(&message, full).await,
    }
}

/// Listens on `<prefix>.cancel.*.*` and cancels matching running jobs.
pub async fn serve_cancel(
    nats: async_nats::Client,
    subjects: Subjects,
    running: RunningJobs,
) -> Result<tokio::task::JoinHandle<()>, IntakeError> {
    let subject = subjects.cancel_all();
    let mut subscription = nats
        .subscribe(subject.clone())
        .await
        .map_err(|error| IntakeError {
            subject,
            message: error.to_string(),
        })?;
    Ok(tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            if let Some((tenant, id)) = subjects.parse_cancel(&message.subject)
                && running.cancel(tenant, id)
            {
                tracing::info!(%tenant, %id, "job cancelled by client");
            }
        }
    }))
}

/// The NATS header that carries a W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The valid `traceparent` header of `message`, if any; an invalid one is ignored (debug log).
pub fn traceparent_header(message: &Message) -> Option<String> {
    let value = message.headers.as_ref()?.get(TRACEPARENT_HEADER)?;
    valid_traceparent(value.as_str(), "header")
}

/// `value` when it is a valid W3C `traceparent`; else `None`, logged at debug level naming
/// `source`: a bad trace context never costs a job.
pub fn valid_traceparent(value: &str, source: &'static str) -> Option<String> {
    if is_valid_traceparent(value) {
        return Some(value.to_string());
    }
    let shown: String = value.chars().take(80).collect();
    tracing::debug!(source, value = ?shown, "ignoring an invalid traceparent (want 00-<32 hex>-<16 hex>-<2 hex>)");
    None
}

/// Gives `context` the `traceparent` field of `request` when the header gave none, and records
/// the job's trace context on the current (job) span.
pub fn adopt_traceparent(context: &mut AuditContext, request: &ExecRequest) {
    if context.traceparent.is_none()
        && let Some(field) = request.traceparent.as_deref()
    {
        context.traceparent = valid_traceparent(field, "request field");
    }
    if let Some(traceparent) = &context.traceparent {
        tracing::Span::current().record("traceparent", traceparent.as_str());
    }
}
