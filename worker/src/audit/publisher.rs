//! [`AuditPublisher`]: the worker's [`AuditSink`] on NATS, every event sealed into the
//! worker's [`Chain`] as it is published.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use openshell_protocol::{AuditEvent, Subjects};

use super::chain::Sealed;
use super::{AuditError, AuditSink, Chain};

/// How long [`AuditPublisher`] waits for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Not at all.
    Sent,
    /// Until the server has it: a flush, or the audit stream's ack with JetStream.
    Stored,
}

/// Publishes audit events to NATS: the worker's [`AuditSink`].
#[derive(Debug, Clone)]
pub struct AuditPublisher {
    nats: async_nats::Client,
    subjects: Subjects,
    chain: Arc<Chain>,
    jetstream: Option<async_nats::jetstream::Context>,
}

impl AuditPublisher {
    /// A publisher over `nats`, sealing events into `chain` (one per worker: every publisher of
    /// a worker shares it).
    pub fn new(nats: async_nats::Client, subjects: Subjects, chain: Arc<Chain>) -> Self {
        Self {
            nats,
            subjects,
            chain,
            jetstream: None,
        }
    }

    /// This publisher, with [`AuditSink::publish_flushed`] waiting for a JetStream ack (and
    /// [`AuditSink::publish`] checking the ack in the background, to declare an event the
    /// stream did not store).
    pub fn with_jetstream(mut self, jetstream: async_nats::jetstream::Context) -> Self {
        self.jetstream = Some(jetstream);
        self
    }

    /// The chain events are sealed into.
    pub fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    /// Seals `event` into the chain and publishes it, holding the chain's lock only until the
    /// connection has it; then waits as `wait` says.
    async fn send(&self, event: &AuditEvent, wait: Wait) -> Result<(), AuditError> {
        let subject = self.subjects.audit(&event.tenant, &event.pool, event.event);
        let error = |message: String| AuditError {
            event: event.event.to_string(),
            job_id: event.job_id.clone(),
            subject: subject.clone(),
            message,
        };
        let mut link = self.chain.link().await;
        let sealed = link.seal(event).map_err(|e| error(e.to_string()))?;
        let max_payload = self.nats.server_info().max_payload;
        if max_payload > 0 && sealed.payload.len() > max_payload {
            // Cannot happen below the worker's request limit (see AUDIT_ENVELOPE_BYTES); said
            // plainly rather than as the server's refusal if it ever does.
            return Err(error(format!(
                "the event is {} bytes, over the server's max_payload of {max_payload}",
                sealed.payload.len()
            )));
        }
        let Sealed { payload, seq, hash } = sealed;
        let payload = Bytes::from(payload);
        match &self.jetstream {
            Some(jetstream) => {
                let acked = jetstream
                    .publish(subject.clone(), payload)
                    .await
                    .map_err(|e| error(stream_hint(&e.to_string())))?;
                link.commit(seq, &hash);
                drop(link);
                if wait == Wait::Sent {
                    // Nobody waits, but an event the stream did not store must still be
                    // declared, or verify would take the gap for a deletion.
                    let chain = Arc::clone(&self.chain);
                    tokio::spawn(async move {
                        if acked.await.is_err() {
                            chain.unstored(seq, hash).await;
                        }
                    });
                } else if let Err(e) = acked.await {
                    // Published, so chained on; declared in the next checkpoint.
                    self.chain.unstored(seq, hash).await;
                    return Err(error(stream_hint(&e.to_string())));
                }
            }
            None => {
                self.nats
                    .publish(subject.clone(), payload)
                    .await
                    .map_err(|e| error(e.to_string()))?;
                link.commit(seq, &hash);
                drop(link);
                if wait == Wait::Stored {
                    self.nats.flush().await.map_err(|e| error(e.to_string()))?;
                }
            }
        }
        Ok(())
    }
}

fn stream_hint(message: &str) -> String {
    format!(
        "{message}; is the OPENSHELL_AUDIT stream there and below its limits (nats stream info OPENSHELL_AUDIT)?"
    )
}

#[async_trait]
impl AuditSink for AuditPublisher {
    /// Publishes `event` without waiting for the server.
    async fn publish(&self, event: &AuditEvent) -> Result<(), AuditError> {
        self.send(event, Wait::Sent).await
    }

    /// Publishes `event` and waits until the server has it: a flush round trip, or with
    /// JetStream the audit stream's ack (no stream, or a full one, is an error).
    async fn publish_flushed(&self, event: &AuditEvent) -> Result<(), AuditError> {
        self.send(event, Wait::Stored).await
    }
}
