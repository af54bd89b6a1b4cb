//! The client side of durable mode: submit a job, fetch or await its result, cancel it.

use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use openshell_protocol::subjects::check_token;
use openshell_protocol::{ExecRequest, ExecResult, Subjects};

use super::results;
use super::streams::RESULTS;
use super::subjects::{DurableSubjects, REPLY_TO_HEADER};
use super::{Cause, DurableError};

/// What the jobs stream said to a submission.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Submitted {
    /// Job id.
    pub id: String,
    /// Stream sequence of the queued job.
    pub sequence: u64,
    /// True when the tenant had this id queued already (nothing was added).
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

    /// Queues `request` for `pool` as `tenant` on the job's own subject, so (tenant, id) is
    /// queued at most once; a job whose result is stored already is not run again by workers.
    /// With `reply_to` (the tenant's inbox or the job's result subject), the worker also
    /// publishes the result there once it is stored.
    pub async fn submit(
        &self,
        pool: &str,
        tenant: &str,
        request: &ExecRequest,
        reply_to: Option<&str>,
    ) -> Result<Submitted, DurableError> {
        let subject = self.subjects.job(pool, tenant, &request.id);
        let error = |source: Cause| DurableError::Publish {
            subject: subject.clone(),
            source,
        };
        for (what, token) in [
            ("pool", pool),
            ("tenant", tenant),
            ("job id", request.id.as_str()),
        ] {
            check_token(what, token).map_err(|e| error(e.into()))?;
        }
        let payload = serde_json::to_vec(request).map_err(|e| error(e.into()))?;
        let mut publish = PublishMessage::build()
            .payload(Bytes::from(payload))
            .expected_last_subject_sequence(0);
        if let Some(reply_to) = reply_to {
            publish = publish.header(REPLY_TO_HEADER, reply_to);
        }
        let acked = self
            .jetstream
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| error(e.into()))?
            .await;
        match acked {
            Ok(ack) => Ok(Submitted {
                id: request.id.clone(),
                sequence: ack.sequence,
                duplicate: false,
            }),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(Submitted {
                id: request.id.clone(),
                sequence: 0,
                duplicate: true,
            }),
            Err(e) => Err(error(
                format!("{e} (is a durable worker running, so OPENSHELL_JOBS exists?)").into(),
            )),
        }
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

    /// Cancels `job_id` of `tenant` with a message on its cancel subject: the worker running
    /// it stops it, and a durable worker stores `cancelled` for it while it is still queued.
    /// Returns the job's stored result (its own, or `cancelled`) once there is one, waiting up
    /// to `wait`.
    pub async fn cancel(
        &self,
        tenant: &str,
        job_id: &str,
        wait: Duration,
    ) -> Result<Option<ExecResult>, DurableError> {
        let cancel = self.core.cancel(tenant, job_id);
        self.nats
            .publish(cancel.clone(), Bytes::new())
            .await
            .map_err(|e| DurableError::Publish {
                subject: cancel,
                source: e.into(),
            })?;
        self.result(tenant, job_id, wait).await
    }

    /// The results stream, without the STREAM.INFO call an agent need not be allowed.
    async fn results_stream(&self) -> Result<Stream<()>, DurableError> {
        self.jetstream
            .get_stream_no_info(RESULTS)
            .await
            .map_err(|e| DurableError::Stream {
                stream: RESULTS.to_string(),
                source: e.into(),
            })
    }
}
