//! One durable pull consumer per pool, shared by the pool's workers.
//!
//! Consumer `openshell-<pool>` on `OPENSHELL_JOBS`: filter `<prefix>.jobs.<pool>.*`, deliver
//! all, explicit acks, `ack_wait` = `durable.ack_wait` (30s), server `max_deliver` unlimited
//! (the worker counts started runs itself, see `attempts`, so that the last delivery can store a
//! `worker_lost` result). A worker pulls only as many jobs as it has free slots.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config;
use async_nats::jetstream::consumer::{AckPolicy, Consumer, DeliverPolicy};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use openshell_scheduler::Slots;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::streams::JOBS;
use super::{Cause, DurableError, DurablePool};

/// How long one pull waits for jobs before asking again.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// Pause after a failed pull (NATS down or restarting).
const PULL_RETRY: Duration = Duration::from_millis(500);

/// The consumer name of `pool`.
pub fn name(pool: &str) -> String {
    format!("openshell-{pool}")
}

/// The documented consumer settings of `pool`.
pub fn config(pool: &str, filter: String, ack_wait: Duration) -> Config {
    Config {
        durable_name: Some(name(pool)),
        description: Some(format!("OpenShell workers of pool {pool}")),
        filter_subject: filter,
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        max_deliver: -1,
        ..Config::default()
    }
}

/// Creates the pool's consumer, or checks the one that exists.
pub async fn ensure(jobs: &Stream, wanted: Config) -> Result<Consumer<Config>, DurableError> {
    let consumer_name = wanted.durable_name.clone().unwrap_or_default();
    let error = |source: Cause| DurableError::Consumer {
        stream: JOBS.into(),
        consumer: consumer_name.clone(),
        source,
    };
    let mut consumer = jobs
        .get_or_create_consumer(&consumer_name, wanted.clone())
        .await
        .map_err(|e| error(e.into()))?;
    let found = consumer
        .info()
        .await
        .map_err(|e| error(e.into()))?
        .config
        .clone();
    let mut differences = Vec::new();
    if found.filter_subject != wanted.filter_subject {
        differences.push(format!(
            "filter_subject: found {:?}, need {:?}",
            found.filter_subject, wanted.filter_subject
        ));
    }
    if found.ack_policy != AckPolicy::Explicit {
        differences.push(format!(
            "ack_policy: found {:?}, need Explicit",
            found.ack_policy
        ));
    }
    if !differences.is_empty() {
        return Err(DurableError::IncompatibleConsumer {
            stream: JOBS.into(),
            consumer: consumer_name,
            differences: differences.join("; "),
        });
    }
    if found.ack_wait != wanted.ack_wait || found.max_deliver != wanted.max_deliver {
        tracing::warn!(consumer = %consumer_name, found_ack_wait = ?found.ack_wait, found_max_deliver = found.max_deliver, "consumer settings differ from the configuration; left as they are");
    }
    Ok(consumer)
}

/// Pulls the pool's jobs while it is ready and has free `gate` slots, and handles each in a
/// task on `tracker`, until `stop` fires. An unready pool (backend down) pulls nothing, so
/// its jobs wait in the stream for a worker that can run them.
pub fn serve(
    pool: Arc<DurablePool>,
    consumer: Consumer<Config>,
    gate: Slots,
    tracker: TaskTracker,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut readiness = pool.runtime.readiness().clone();
        loop {
            tokio::select! {
                () = readiness.ready() => {}
                () = stop.cancelled() => break,
            }
            let first = tokio::select! {
                permit = gate.acquire() => permit,
                () = stop.cancelled() => break,
            };
            let mut permits = vec![first];
            permits.extend(std::iter::from_fn(|| gate.try_acquire()));
            let batch = consumer
                .batch()
                .max_messages(permits.len())
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let mut messages = match batch {
                Ok(messages) => messages,
                Err(error) => {
                    pull_failed(&pool, error.into(), &stop).await;
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    next = messages.next() => next,
                    () = stop.cancelled() => None,
                };
                match next {
                    Some(Ok(message)) => {
                        let Some(permit) = permits.pop() else { break };
                        tracker.spawn(Arc::clone(&pool).handle(message, permit));
                    }
                    Some(Err(error)) => {
                        pull_failed(&pool, error, &stop).await;
                        break;
                    }
                    None => break,
                }
            }
        }
    })
}

async fn pull_failed(pool: &DurablePool, source: Cause, stop: &CancellationToken) {
    let error = DurableError::Pull {
        consumer: name(pool.runtime.name()),
        source,
    };
    tracing::warn!(%error);
    tokio::select! {
        () = tokio::time::sleep(PULL_RETRY) => {}
        () = stop.cancelled() => {}
    }
}
