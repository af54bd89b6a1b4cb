//! NATS intake: one queue subscription per pool, plus the cancel listener.

use std::sync::Arc;

use async_nats::Message;
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

/// Serves `pool` on its request subject in its queue group on `nats` while the pool is ready,
/// handling each request in a task on `tracker`, until `stop` fires. While the pool's backend is
/// unhealthy the worker leaves the queue group, so requests go to workers that can run them.
/// Pending messages are drained, not dropped.
pub async fn serve_pool(
    pool: Arc<PoolRuntime>,
    nats: async_nats::Client,
    tracker: TaskTracker,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, IntakeError> {
    let subject = pool.subjects().exec_wildcard(pool.name());
    // The first subscription is made here, so that a refused one stops the worker.
    let first = if pool.readiness().is_ready() {
        Some(subscribe(&nats, &pool).await?)
    } else {
        tracing::warn!(pool = %pool.name(), "pool not ready: not taking jobs until its backend passes a check");
        None
    };
    tracing::info!(pool = %pool.name(), backend = pool.backend().kind(), %subject, slots = pool.slots().total(), "serving pool");
    Ok(tokio::spawn(async move {
        let mut readiness = pool.readiness().clone();
        let mut subscription = first;
        loop {
            let mut current = match subscription.take() {
                Some(current) => current,
                None => {
                    tokio::select! {
                        () = readiness.ready() => {}
                        () = stop.cancelled() => break,
                    }
                    match subscribe(&nats, &pool).await {
                        Ok(current) => {
                            tracing::info!(pool = %pool.name(), "pool ready: taking jobs again");
                            current
                        }
                        Err(error) => {
                            tracing::error!(%error, "pool not serving");
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
            };
            let stopping = loop {
                tokio::select! {
                    message = current.next() => match message {
                        Some(message) => admit_waiting(&pool, &tracker, message).await,
                        None => break true,
                    },
                    () = readiness.unready() => break false,
                    () = stop.cancelled() => break true,
                }
            };
            // Leave the queue group, then handle what the server already sent us.
            let _ = current.unsubscribe().await;
            while let Ok(Some(message)) =
                tokio::time::timeout(std::time::Duration::from_millis(200), current.next()).await
            {
                admit_waiting(&pool, &tracker, message).await;
            }
            if stopping {
                break;
            }
            tracing::warn!(pool = %pool.name(), "pool not ready: left the queue group until its backend passes a check");
        }
    }))
}

async fn subscribe(
    nats: &async_nats::Client,
    pool: &PoolRuntime,
) -> Result<async_nats::Subscriber, IntakeError> {
    let subject = pool.subjects().exec_wildcard(pool.name());
    let queue = pool.subjects().queue_group(pool.name());
    nats.queue_subscribe(subject.clone(), queue)
        .await
        .map_err(|error| IntakeError {
            subject,
            message: error.to_string(),
        })
}

/// Gives `message` a seat in its pool's waiting room and handles it in a task, or refuses it
/// as `overloaded` right here: refusing is cheap, and doing it in line keeps a flood from
/// turning into as many tasks.
async fn admit_waiting(pool: &Arc<PoolRuntime>, tracker: &TaskTracker, message: Message) {
    match pool.waiting().try_enter(&pool.tenant_of(&message)) {
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
