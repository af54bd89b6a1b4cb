//! Live output of a job whose request set `stream`: what the job writes is published as
//! [`OutputChunk`]s on its output subject while it runs.
//!
//! The job's [`OutputSink`] is tapped, so chunks carry exactly the bytes the result keeps
//! (the output limit applies to both). Writes are coalesced: a chunk goes out when it holds
//! [`CHUNK_BYTES`], when the stream changes, or [`FLUSH_EVERY`] after its first byte, so a job
//! printing byte by byte costs at most one message per 50 ms, and a flood at most its output
//! limit in 16 KiB messages. [`Live::finish`] publishes the last chunk and returns only then,
//! so nothing of a job is published after its result.

use std::sync::Arc;
use std::time::Duration;

use openshell_backend::{OutputSink, Stream, Written};
use openshell_protocol::{OutputChunk, OutputStream, PROTOCOL_VERSION, Payload};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::reply::Replier;

/// Largest chunk, in bytes of output.
pub const CHUNK_BYTES: usize = 16 * 1024;

/// How long written bytes may wait for more before they are published.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// How long the last chunks may take to go out once the job ended (a NATS outage must not
/// hold the job's slot and result); what is left then is dropped, the result carries it.
pub const FINISH_WITHIN: Duration = Duration::from_secs(5);

/// A job's live output on its way out.
pub struct Live {
    sink: OutputSink,
    task: JoinHandle<()>,
}

impl Live {
    /// A sink of `limit` bytes whose writes go to `subject` as chunks of job `id`, sent with
    /// `replier`.
    pub fn start(limit: u64, replier: Arc<dyn Replier>, subject: String, id: String) -> Self {
        let (tap, written) = unbounded_channel();
        let sink = OutputSink::tapped(limit, tap);
        let publisher = Publisher {
            replier,
            subject,
            id,
            seq: 0,
            broken: false,
        };
        let task = tokio::spawn(publisher.run(written));
        Self { sink, task }
    }

    /// The sink to hand the backend.
    pub fn sink(&self) -> &OutputSink {
        &self.sink
    }

    /// Stops the tap and waits until the last chunk is published, at most [`FINISH_WITHIN`].
    pub async fn finish(self) {
        self.sink.close_tap();
        let abort = self.task.abort_handle();
        match tokio::time::timeout(FINISH_WITHIN, self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the live output of a job stopped early"),
            Err(_) => {
                abort.abort();
                tracing::warn!(
                    "live output still unsent {FINISH_WITHIN:?} after the job ended; dropped (the result carries it)"
                );
            }
        }
    }
}

/// Publishes one job's chunks, numbered in order.
struct Publisher {
    replier: Arc<dyn Replier>,
    subject: String,
    id: String,
    seq: u64,
    /// A publish failed: the rest is dropped (the result still carries the whole output).
    broken: bool,
}

impl Publisher {
    async fn run(mut self, mut written: UnboundedReceiver<Written>) {
        let mut pending: Option<(Stream, Vec<u8>)> = None;
        let mut due: Option<Instant> = None;
        loop {
            let next = match due {
                Some(at) => tokio::select! {
                    next = written.recv() => Some(next),
                    () = tokio::time::sleep_until(at) => None,
                },
                None => Some(written.recv().await),
            };
            match next {
                // Due: publish what waited.
                None => {
                    self.flush(&mut pending).await;
                    due = None;
                }
                // The job ended and the tap closed.
                Some(None) => {
                    self.flush(&mut pending).await;
                    return;
                }
                Some(Some(Written { stream, bytes })) => {
                    if pending.as_ref().is_some_and(|(held, _)| *held != stream) {
                        self.flush(&mut pending).await;
                    }
                    let (_, held) = pending.get_or_insert_with(|| (stream, Vec::new()));
                    held.extend_from_slice(&bytes);
                    while pending
                        .as_ref()
                        .is_some_and(|(_, held)| held.len() >= CHUNK_BYTES)
                    {
                        let (stream, held) = pending.take().unwrap_or((stream, Vec::new()));
                        let rest = held[CHUNK_BYTES..].to_vec();
                        self.publish(stream, held[..CHUNK_BYTES].to_vec()).await;
                        pending = (!rest.is_empty()).then_some((stream, rest));
                    }
                    due = match (&pending, due) {
                        (None, _) => None,
                        (Some(_), Some(at)) => Some(at),
                        (Some(_), None) => Some(Instant::now() + FLUSH_EVERY),
                    };
                }
            }
        }
    }

    async fn flush(&mut self, pending: &mut Option<(Stream, Vec<u8>)>) {
        if let Some((stream, bytes)) = pending.take() {
            self.publish(stream, bytes).await;
        }
    }

    async fn publish(&mut self, stream: Stream, bytes: Vec<u8>) {
        if self.broken {
            return;
        }
        let chunk = OutputChunk {
            version: PROTOCOL_VERSION,
            id: self.id.clone(),
            seq: self.seq,
            stream: match stream {
                Stream::Stdout => OutputStream::Stdout,
                Stream::Stderr => OutputStream::Stderr,
            },
            data: Payload(bytes),
        };
        self.seq += 1;
        if let Err(error) = self.replier.chunk(&self.subject, &chunk).await {
            tracing::warn!(%error, "live output lost; the result still carries it");
            self.broken = true;
        }
    }
}
