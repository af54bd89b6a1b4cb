//! Signed checkpoints of the worker's chain, published on `<prefix>.audit.checkpoint.<chain>`
//! every `audit.checkpoint_interval` and once more, `final`, when the worker stops.
//!
//! A checkpoint is made and published under the chain's lock, so in the stream it follows the
//! event it names and precedes the next one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use openshell_protocol::audit::CheckpointKind;
use openshell_protocol::{AuditCheckpoint, PROTOCOL_VERSION, Subjects};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{AuditKey, Chain};

/// Why a checkpoint could not be published.
#[derive(Debug, thiserror::Error)]
#[error(
    "the {kind} audit checkpoint of chain {chain} could not be published to {subject}: {message}"
)]
pub struct CheckpointError {
    /// Which checkpoint.
    pub kind: CheckpointKind,
    /// The chain.
    pub chain: String,
    /// The subject.
    pub subject: String,
    /// The cause.
    pub message: String,
}

/// Makes, signs and publishes the checkpoints of one chain.
#[derive(Debug)]
pub struct Checkpointer {
    chain: Arc<Chain>,
    key: AuditKey,
    nats: async_nats::Client,
    jetstream: Option<async_nats::jetstream::Context>,
    subject: String,
    interval: Duration,
}

impl Checkpointer {
    /// Checkpoints of `chain` signed with `key`, published on `nats` (acknowledged by the
    /// audit stream when `jetstream` is given).
    pub fn new(
        chain: Arc<Chain>,
        key: AuditKey,
        nats: async_nats::Client,
        subjects: &Subjects,
        jetstream: Option<async_nats::jetstream::Context>,
        interval: Duration,
    ) -> Self {
        let subject = subjects.audit_checkpoint(chain.id());
        Self {
            chain,
            key,
            nats,
            jetstream,
            subject,
            interval,
        }
    }

    /// Publishes a checkpoint of `kind` and waits for the server to have it.
    pub async fn checkpoint(
        &self,
        kind: CheckpointKind,
    ) -> Result<AuditCheckpoint, CheckpointError> {
        let error = |message: String| CheckpointError {
            kind,
            chain: self.chain.id().to_string(),
            subject: self.subject.clone(),
            message,
        };
        let mut link = self.chain.link().await;
        let state = link.state();
        let mut checkpoint = AuditCheckpoint {
            version: PROTOCOL_VERSION,
            checkpoint: kind,
            worker_id: self.chain.worker_id().to_string(),
            chain: self.chain.id().to_string(),
            chain_started: self.chain.started(),
            timestamp: Utc::now(),
            seq: state.seq,
            hash: state.hash.clone(),
            interval_ms: self.interval.as_millis() as u64,
            unstored: std::mem::take(&mut state.unstored),
            key: self.key.public_hex(),
            signature: String::new(),
        };
        checkpoint.signature = self.key.sign_hex(&checkpoint.signed_bytes());
        let payload =
            Bytes::from(serde_json::to_vec(&checkpoint).map_err(|e| error(e.to_string()))?);
        let sent = match &self.jetstream {
            Some(jetstream) => jetstream
                .publish(self.subject.clone(), payload)
                .await
                .map(Some)
                .map_err(|e| e.to_string()),
            None => self
                .nats
                .publish(self.subject.clone(), payload)
                .await
                .map(|()| None)
                .map_err(|e| e.to_string()),
        };
        drop(link);
        let published = match sent {
            Ok(Some(ack)) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Ok(None) => self.nats.flush().await.map_err(|e| e.to_string()),
            Err(message) => Err(message),
        };
        if let Err(message) = published {
            // Declared again by the next checkpoint.
            for unstored in checkpoint.unstored.iter().cloned() {
                self.chain.unstored(unstored.seq, unstored.hash).await;
            }
            return Err(error(message));
        }
        Ok(checkpoint)
    }

    /// Publishes an `interval` checkpoint at the interval until `stop` fires.
    pub fn spawn(self: Arc<Self>, stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.interval);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = stop.cancelled() => return,
                }
                if let Err(error) = self.checkpoint(CheckpointKind::Interval).await {
                    tracing::error!(%error, "audit checkpoint lost; the next one covers its events");
                }
            }
        })
    }
}
