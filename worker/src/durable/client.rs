//! The client side of durable mode: submit a job, fetch or await its result, cancel it.

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use openshell_protocol::subjects::check_token;
use openshell_protocol::{ErrorInfo, ErrorKind, ExecRequest, ExecResult, Subjects, Verdict};

use super::DurableError;
use super::results::{self, Stored};
use super::streams::RESULTS;
use super::subjects::{DurableSubjects, REPLY_TO_HEADER};

/// What the jobs stream said to a submission.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Submitted {
    /// Job id.
    pub id: String,
    /// Stream sequence of the queued job.
    pub sequence: u64,
    /// True when the id was already queued within the duplicate window (nothing was added).
    pub duplicate: bool,
}

/// Durable-mode calls over one NATS connection.
#[derive(Debug, Clone)]
pub struct DurableClient {
    nats: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    subjects: DurableSubjects,
    core: Subjects,
}

impl DurableClient {
    /// A client over `nats` under subject `prefix`.
    pub fn new(nats: async_nats::Client, prefix: &str) -> Self {
        Self {
            jetstream: async_nats::jetstream::new(nats.clone()),
            nats,
            subjects: DurableSubjects::new(prefix),
            core: Subjects::new(prefix),
        }
    }

    /// Queues `request` for `pool` as `tenant`; the job id is the dedup key (`Nats-Msg-Id`).
    /// With `reply_to`, the worker also publishes the result there once it is stored.
    pub async fn submit(
        &self,
        pool: &str,
        tenant: &str,
        request: &ExecRequest,
        reply_to: Option<&str>,
    ) -> Result<Submitted, DurableError> {
        let subject = self.subjects.job(pool, tenant);
        let error = |message: String| DurableError::Publish {
            subject: subject.clone(),
            message,
        };
        for (what, token) in [
            ("pool", pool),
            ("tenant", tenant),
            ("job id", request.id.as_str()),
        ] {
            check_token(what, token).map_err(|e| error(e.to_string()))?;
        }
        let payload = serde_json::to_vec(request).map_err(|e| error(e.to_string()))?;
        let mut publish = PublishMessage::build()
            .payload(Bytes::from(payload))
            .message_id(&request.id);
        if let Some(reply_to) = reply_to {
            publish = publish.header(REPLY_TO_HEADER, reply_to);
        }
        let ack = self
            .jetstream
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| error(e.to_string()))?
            .await
            .map_err(|e| {
                error(format!(
                    "{e} (is a durable worker running, so OPENSHELL_JOBS exists?)"
                ))
            })?;
        Ok(Submitted {
            id: request.id.clone(),
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// The stored result of `job_id` of `tenant`, waiting up to `wait` for it (zero: look once).
    pub async fn result(
        &self,
        tenant: &str,
        job_id: &str,
        wait: Duration,
    ) -> Result<Option<ExecResult>, DurableError> {
        let subject = self.subjects.result(tenant, job_id);
        let stream = self.results_stream().await?;
        if wait.is_zero() {
            return results::fetch(&stream, &subject).await;
        }
        results::wait(&self.nats, &stream, &subject, wait).await
    }

    /// Cancels `job_id` of `tenant`: a running job is stopped, a queued one will not start.
    /// Returns the job's stored result when it had already finished.
    pub async fn cancel(
        &self,
        tenant: &str,
        job_id: &str,
    ) -> Result<Option<ExecResult>, DurableError> {
        let cancel = self.core.cancel(tenant, job_id);
        self.nats
            .publish(cancel.clone(), Bytes::new())
            .await
            .map_err(|e| DurableError::Publish {
                subject: cancel,
                message: e.to_string(),
            })?;
        let subject = self.subjects.result(tenant, job_id);
        let mut result = ExecResult::failed(
            job_id,
            ErrorInfo::new(
                ErrorKind::Cancelled,
                "cancelled by a client before it finished",
            ),
        );
        result.status = Verdict::Cancelled;
        result.tenant = tenant.to_string();
        // A stored result is final: this one is kept only if the job had none.
        match results::store(&self.jetstream, &subject, &mut result, 64 * 1024).await? {
            Stored::New => Ok(None),
            Stored::AlreadyThere => {
                let stream = self.results_stream().await?;
                results::fetch(&stream, &subject).await
            }
        }
    }

    /// The results stream, without the STREAM.INFO call an agent need not be allowed.
    async fn results_stream(&self) -> Result<Stream<()>, DurableError> {
        self.jetstream
            .get_stream_no_info(RESULTS)
            .await
            .map_err(|e| DurableError::Stream {
                stream: RESULTS.to_string(),
                message: e.to_string(),
            })
    }
}
