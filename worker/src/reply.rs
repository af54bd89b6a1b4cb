//! Where a job's result goes: the [`Replier`] the job path sends it (and, for a request with
//! `stream`, its live output) with, and its NATS implementation, [`NatsReplier`], publishing
//! on the request's reply subject and the job's output subject.

use async_trait::async_trait;
use bytes::Bytes;
use openshell_protocol::{ExecResult, OutputChunk};

/// Results smaller than this always fit, whatever the server announces.
const MIN_PAYLOAD: usize = 64 * 1024;

/// Why a result could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("could not send the result of job `{job_id}` to {subject}")]
pub struct ReplyError {
    /// The reply subject.
    pub subject: String,
    /// Job id.
    pub job_id: String,
    /// The cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Sends a job's result to the subject its client waits on.
#[async_trait]
pub trait Replier: Send + Sync {
    /// Sends `result` to `subject`, cutting stdout and stderr (marked truncated) until it fits
    /// what the transport carries.
    async fn reply(&self, subject: &str, result: &mut ExecResult) -> Result<(), ReplyError>;

    /// Sends one chunk of a running job's live output to `subject`.
    async fn chunk(&self, subject: &str, chunk: &OutputChunk) -> Result<(), ReplyError>;
}

/// Publishes results on NATS, within the server's `max_payload`.
#[derive(Debug, Clone)]
pub struct NatsReplier {
    nats: async_nats::Client,
}

impl NatsReplier {
    /// A replier over `nats`.
    pub fn new(nats: async_nats::Client) -> Self {
        Self { nats }
    }
}

/// The largest message the server `nats` is connected to takes (at least 64 KiB).
pub fn max_payload(nats: &async_nats::Client) -> usize {
    nats.server_info().max_payload.max(MIN_PAYLOAD)
}

#[async_trait]
impl Replier for NatsReplier {
    async fn reply(&self, subject: &str, result: &mut ExecResult) -> Result<(), ReplyError> {
        let payload = result.encode_within(max_payload(&self.nats));
        self.nats
            .publish(subject.to_string(), Bytes::from(payload))
            .await
            .map_err(|source| ReplyError {
                subject: subject.to_string(),
                job_id: result.id.clone(),
                source: Box::new(source),
            })
    }

    async fn chunk(&self, subject: &str, chunk: &OutputChunk) -> Result<(), ReplyError> {
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| ReplyError {
            subject: subject.to_string(),
            job_id: chunk.id.clone(),
            source,
        };
        let payload = serde_json::to_vec(chunk).map_err(|error| failed(Box::new(error)))?;
        self.nats
            .publish(subject.to_string(), Bytes::from(payload))
            .await
            .map_err(|error| failed(Box::new(error)))
    }
}
