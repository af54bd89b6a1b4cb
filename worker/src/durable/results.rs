//! Stored results: at most one per job, kept in `OPENSHELL_RESULTS`.
//!
//! A result is published with `Nats-Expected-Last-Subject-Sequence: 0`, so the stream takes
//! it only when the job has none yet: the first result stored (a run, `worker_lost`, or a
//! client's cancel) is the job's one result, and later ones are refused. Results are read
//! with a direct get of the last message on the job's subject, whose API subject names the
//! result subject, so NATS permissions can confine an agent to its own tenant's results.

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{DirectGetErrorKind, LastRawMessageErrorKind, Stream};
use bytes::Bytes;
use futures::StreamExt;
use openshell_protocol::ExecResult;

use super::streams::RESULTS;
use super::{Cause, DurableError};

/// What became of a result handed to [`store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// This result is the job's stored result.
    New,
    /// The job already had one; this one was dropped.
    AlreadyThere,
}

/// Stores `result` on `subject` unless the job already has a result.
pub async fn store(
    jetstream: &Context,
    subject: &str,
    result: &mut ExecResult,
    max_payload: usize,
) -> Result<Stored, DurableError> {
    let payload = result.encode_within(max_payload);
    let error = |source: Cause| DurableError::Publish {
        subject: subject.to_string(),
        source,
    };
    // No `Nats-Msg-Id`: deduplication by id is stream-wide, so another tenant's job with the
    // same id would make this result a "duplicate". The subject is the identity.
    let publish = PublishMessage::build()
        .payload(Bytes::from(payload))
        .expected_last_subject_sequence(0);
    let acked = match jetstream.send_publish(subject.to_string(), publish).await {
        Ok(future) => future.await,
        Err(error) => Err(error),
    };
    match acked {
        Ok(ack) if ack.duplicate => Ok(Stored::AlreadyThere),
        Ok(_) => Ok(Stored::New),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(Stored::AlreadyThere),
        Err(e) => Err(error(e.into())),
    }
}

/// The stored result on `subject`, if there is one.
pub async fn fetch<I>(
    results: &Stream<I>,
    subject: &str,
) -> Result<Option<ExecResult>, DurableError> {
    let Some(payload) = last(results, subject).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&payload)
        .map(Some)
        .map_err(|e| read_error(subject, format!("not an ExecResult: {e}")))
}

/// What `subject` holds: nothing, or a stored message, readable as a result (`Some`) or not
/// (`None`); either way the job's one result is taken. Read from the stream's leader, never a
/// direct get: on a cluster a direct get may be answered by a replica that has not caught up
/// (after a node loss, say), and a result it does not know yet would make the job run twice.
pub async fn stored<I>(
    results: &Stream<I>,
    subject: &str,
) -> Result<Option<Option<ExecResult>>, DurableError> {
    match results.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(Some(serde_json::from_slice(&message.payload).ok())),
        Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(e) => Err(read_error(subject, e)),
    }
}

async fn last<I>(results: &Stream<I>, subject: &str) -> Result<Option<Bytes>, DurableError> {
    match results.direct_get_last_for_subject(subject).await {
        Ok(message) => Ok(Some(message.payload)),
        Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(None),
        Err(e) => Err(read_error(subject, e)),
    }
}

fn read_error(subject: &str, source: impl Into<Cause>) -> DurableError {
    DurableError::Read {
        stream: RESULTS.to_string(),
        subject: subject.to_string(),
        source: source.into(),
    }
}

/// Waits up to `wait` for the result on `subject`: subscribes first, then looks in the stream,
/// so a result stored in between is not missed.
pub async fn wait<I>(
    nats: &async_nats::Client,
    results: &Stream<I>,
    subject: &str,
    wait: Duration,
) -> Result<Option<ExecResult>, DurableError> {
    let mut live = nats
        .subscribe(subject.to_string())
        .await
        .map_err(|e| DurableError::Read {
            stream: RESULTS.to_string(),
            subject: subject.to_string(),
            source: e.into(),
        })?;
    if let Some(result) = fetch(results, subject).await? {
        return Ok(Some(result));
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Poll the stream too, in case the live message was missed (e.g. a reconnect).
        let tick = tokio::time::Instant::now() + Duration::from_secs(1);
        match tokio::time::timeout_at(tick.min(deadline), live.next()).await {
            Ok(Some(message)) => {
                if let Ok(result) = serde_json::from_slice(&message.payload) {
                    return Ok(Some(result));
                }
            }
            Ok(None) | Err(_) => {
                if let Some(result) = fetch(results, subject).await? {
                    return Ok(Some(result));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(None);
                }
            }
        }
    }
}
