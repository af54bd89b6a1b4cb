//! NATS intake: one queue subscription per pool, plus the cancel listener.

use std::sync::Arc;

use futures::StreamExt;
use openshell_protocol::Subjects;
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
                    Some(message) => { tracker.spawn(Arc::clone(&pool).handle(message)); }
                    None => break,
                },
                () = stop.cancelled() => {
                    // Stop new deliveries, then handle what the server already sent us.
                    let _ = subscription.unsubscribe().await;
                    while let Ok(Some(message)) = tokio::time::timeout(std::time::Duration::from_millis(200), subscription.next()).await {
                        tracker.spawn(Arc::clone(&pool).handle(message));
                    }
                    break;
                }
            }
        }
    }))
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
