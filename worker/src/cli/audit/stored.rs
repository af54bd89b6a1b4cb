//! The `OPENSHELL_AUDIT` stream, read message by message.

use anyhow::Context;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::response::Response;
use async_nats::jetstream::stream::RawMessage;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::durable::streams::AUDIT;

/// The `OPENSHELL_AUDIT` stream read message by message with `$JS.API.STREAM.MSG.GET`. That
/// grant is read-only; a consumer would need `CONSUMER.CREATE`, whose push form lets its creator
/// have the server deliver the stream onto any subject, past the creator's publish permissions.
pub struct StoredAudit {
    jetstream: async_nats::jetstream::Context,
    /// Subjects read, e.g. `openshell.audit.acme.*.*`.
    filter: String,
}

/// The body of a `STREAM.MSG.GET` answer.
#[derive(Deserialize)]
struct MsgGet {
    message: RawMessage,
}

impl StoredAudit {
    /// The stream on `nats`, read on subjects `filter`.
    pub fn new(nats: &async_nats::Client, filter: String) -> Self {
        Self {
            jetstream: async_nats::jetstream::new(nats.clone()),
            filter,
        }
    }

    /// The first message stored at or after stream sequence `sequence`.
    pub async fn from(&self, sequence: u64) -> anyhow::Result<Option<StreamMessage>> {
        self.get(json!({ "seq": sequence.max(1), "next_by_subj": self.filter }))
            .await
    }

    /// The first event stored at or after `since`.
    pub async fn first_since(&self, since: DateTime<Utc>) -> anyhow::Result<Option<StreamMessage>> {
        let since = since.to_rfc3339_opts(SecondsFormat::Nanos, true);
        self.get(json!({ "start_time": since, "next_by_subj": self.filter }))
            .await
    }

    /// The first event stored after sequence `sequence`.
    pub async fn after(&self, sequence: u64) -> anyhow::Result<Option<StreamMessage>> {
        self.get(json!({ "seq": sequence + 1, "next_by_subj": self.filter }))
            .await
    }

    /// The sequence of the last event stored, 0 if none.
    pub async fn last_sequence(&self) -> anyhow::Result<u64> {
        let last = self.get(json!({ "last_by_subj": self.filter })).await?;
        Ok(last.map_or(0, |message| message.sequence))
    }

    async fn get(&self, request: serde_json::Value) -> anyhow::Result<Option<StreamMessage>> {
        let response: Response<MsgGet> = self
            .jetstream
            .request(format!("STREAM.MSG.GET.{AUDIT}"), &request)
            .await
            .with_context(|| {
                format!(
                    "reading {} from stream {AUDIT}: is JetStream enabled on the server?",
                    self.filter
                )
            })?;
        match response {
            Response::Ok(MsgGet { message }) => {
                StreamMessage::try_from(message).map(Some).map_err(|error| {
                    anyhow::anyhow!("a stored event in {AUDIT} is malformed: {error}")
                })
            }
            Response::Err { error } if error.error_code() == ErrorCode::NO_MESSAGE_FOUND => {
                Ok(None)
            }
            Response::Err { error } if error.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                Err(anyhow::anyhow!(
                    "stream {AUDIT} does not exist: start a durable worker (OPENSHELL_DURABLE=true), which creates it"
                ))
            }
            Response::Err { error } => Err(anyhow::Error::from(error)
                .context(format!("reading {} from stream {AUDIT}", self.filter))),
        }
    }
}
