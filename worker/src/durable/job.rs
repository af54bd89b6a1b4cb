//! One delivered job: look for a stored result, put it back while its tenant is at its quota,
//! give up after `max_deliver` started runs, or run it through the shared job path with
//! in-progress acks; store the result, then ack.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use openshell_protocol::decode::salvage_id;
use openshell_protocol::subjects::check_token;
use openshell_protocol::{ErrorInfo, ErrorKind, ExecResult, Traceparent, Verdict};
use openshell_scheduler::{DispatchPermit, NoSlot, SlotPermit};

use super::DurablePool;
use super::attempts::Begin;
use super::lease::{Acquired, Lease};
use super::requeue::{self, RETRY_DELAY, Requeue};
use super::results::{self, Stored};
use super::subjects::{JobSubject, REPLY_TO_HEADER};
use crate::job::{Processed, Waiting, trace};

/// Pause between attempts at storing a result.
const STORE_RETRY: Duration = Duration::from_millis(500);
/// First delay before a job whose tenant is at its quota is offered again; it grows with
/// each delivery up to [`QUOTA_DELAY_MAX`], so a deep queue is not cycled too often.
const QUOTA_DELAY: Duration = Duration::from_millis(250);
/// Longest delay for a job whose tenant is at its quota.
const QUOTA_DELAY_MAX: Duration = Duration::from_secs(2);

impl DurablePool {
    /// Handles one delivered job while holding one of the pool's intake slots.
    pub async fn handle(self: Arc<Self>, message: Message, _permit: SlotPermit) {
        let pool = self.runtime.name();
        let named = self.subjects.parse_job(pool, &message.subject);
        let payload_id = salvage_id(&message.payload);
        let (tenant, id) = match named {
            Some(JobSubject::Job { tenant, id }) => (tenant.to_string(), id.to_string()),
            Some(JobSubject::WithoutId { tenant }) => {
                let (Some(id), Ok(())) = (payload_id, check_token("tenant", tenant)) else {
                    return self.unstorable(&message, "no job id in the subject").await;
                };
                let why = format!(
                    "queue jobs on `{}` (the job id is part of the subject, so that no other tenant can claim it); this one was not run",
                    self.subjects.job(pool, tenant, &id)
                );
                let error = ErrorInfo::new(ErrorKind::InvalidRequest, why);
                return self.refuse(&message, tenant, &id, error, None).await;
            }
            None => {
                return self
                    .unstorable(&message, "not a job subject of this pool")
                    .await;
            }
        };
        if check_token("tenant", &tenant).is_err() || check_token("job id", &id).is_err() {
            return self
                .unstorable(&message, "tenant or job id is not a subject token")
                .await;
        }
        if payload_id.as_deref() != Some(id.as_str()) {
            let why = format!(
                "the request's `id` ({}) is not the job id of its subject (`{id}`); the job was not run",
                payload_id.as_deref().unwrap_or("missing or invalid")
            );
            let error = ErrorInfo::new(ErrorKind::InvalidRequest, why);
            return self.refuse(&message, &tenant, &id, error, None).await;
        }
        let reply = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(REPLY_TO_HEADER))
            .map(|value| value.as_str().to_string());
        if let Some(reply) = &reply
            && let Err(refused) = self
                .runtime
                .subjects()
                .check_reply(&tenant, Some(&id), reply)
        {
            let error = ErrorInfo::new(ErrorKind::ReplyNotAllowed, refused.to_string());
            return self.refuse(&message, &tenant, &id, error, None).await;
        }
        let reply = reply.as_deref();
        let (delivered, pending) = message
            .info()
            .map_or((1, 0), |info| (info.delivered, info.pending));
        let metrics = &self.runtime.metrics().nats;
        metrics.pending(pool, pending);
        if delivered > 1 {
            metrics.redelivered(pool);
        }
        // The slot is taken now, before any round trip, so that jobs pulled together cannot
        // all pass their tenant's quota; with every slot busy (core jobs), the job waits.
        let reserved = match self.runtime.slots().try_acquire(&tenant) {
            Ok(slot) => Some(slot),
            Err(NoSlot::Busy) => None,
            Err(NoSlot::AtQuota) => {
                let delay = QUOTA_DELAY
                    .saturating_mul(u32::try_from(delivered).unwrap_or(u32::MAX))
                    .min(QUOTA_DELAY_MAX);
                tracing::debug!(%id, %tenant, ?delay, "tenant at its quota: job offered again later");
                return ack(&message, AckKind::Nak(Some(delay))).await;
            }
        };
        let subject = self.subjects.result(&tenant, &id);
        let key = format!("{tenant}.{id}");
        // Round trips go side by side where their order does not matter: the attempt count is
        // read with the lease (it is written by compare-and-set, so an early read is safe), and
        // counted while the stored result is looked up.
        let (acquired, count) = tokio::join!(self.leases.acquire(&key), self.attempts.read(&key));
        let lease = match acquired {
            Ok(Acquired::Held(lease)) => *lease,
            Ok(Acquired::Busy(holder)) => {
                let delay = self.settings.ack_wait.as_duration() / 2;
                tracing::info!(%id, %tenant, %holder, ?delay, "job is running under another worker's lease; offered again later, not run");
                return ack(&message, AckKind::Nak(Some(delay))).await;
            }
            Err(error) => {
                tracing::warn!(%error, %id, "job not run now; offered again in {RETRY_DELAY:?}");
                return ack(&message, AckKind::Nak(Some(RETRY_DELAY))).await;
            }
        };
        let count = match count {
            Ok(count) => count,
            Err(error) => {
                tracing::warn!(%error, %id, "job not run now; offered again in {RETRY_DELAY:?}");
                lease.release().await;
                return ack(&message, AckKind::Nak(Some(RETRY_DELAY))).await;
            }
        };
        // Looked for under the lease, not before it: a run that held the lease stores its
        // result before it lets go, so a delivery that was waiting for the lease (a redelivery
        // while that run finished, as around a stream leader change) sees the result here
        // instead of running the job a second time.
        let (stored, begun) = tokio::join!(
            results::stored(&self.results, &subject),
            self.attempts.begin(&key, self.settings.max_deliver, count)
        );
        if !matches!(stored, Ok(None)) {
            // Not run after all: the attempt counted alongside is taken back, so that
            // resubmissions of a finished job do not use up `max_deliver`.
            if matches!(begun, Ok(Begin::Run(_)))
                && let Err(error) = self.attempts.undo(&key).await
            {
                tracing::warn!(%error, %id, "an attempt that did not run stays counted");
            }
            lease.release().await;
            return match stored {
                Ok(stored) => {
                    self.already_stored(&message, &tenant, &id, stored.flatten().as_ref())
                        .await
                }
                Err(error) => {
                    tracing::warn!(%error, %id, "cannot tell whether the job already ran; retried later");
                    ack(&message, AckKind::Nak(Some(RETRY_DELAY))).await
                }
            };
        }
        match begun {
            Ok(Begin::Run(attempt)) => {
                tracing::debug!(%id, %tenant, attempt, delivered, "running queued job");
            }
            Ok(Begin::Exhausted(started)) => {
                let result = self.worker_lost(&message, &tenant, &id, started);
                return self
                    .finish(&message, &subject, result, reply, Some(lease))
                    .await;
            }
            Err(error) => {
                tracing::warn!(%error, %id, "job not run now; offered again in {RETRY_DELAY:?}");
                lease.release().await;
                return ack(&message, AckKind::Nak(Some(RETRY_DELAY))).await;
            }
        }
        let (processed, lease) = self
            .process_with_progress(&message, &tenant, &id, reserved, lease)
            .await;
        let Some(lease) = lease else {
            // Another run may hold the job now: its result, not this stopped one, is stored.
            tracing::warn!(%id, %tenant, "run stopped after losing its lease; result not stored");
            return ack(&message, AckKind::Nak(Some(RETRY_DELAY))).await;
        };
        let put_back = match requeue::decide(&processed, self.settings.ack_wait.as_duration()) {
            Requeue::No => None,
            Requeue::Yes(put_back) => Some(put_back),
            Requeue::IfBackendDown(put_back) => self.backend_down().await.then_some(put_back),
        };
        if let Some(requeue::PutBack { why, delay }) = put_back {
            if let Err(error) = self.attempts.undo(&key).await {
                tracing::warn!(%error, %id, "an attempt that did not run stays counted");
            }
            tracing::warn!(%id, %tenant, "{why}; offered again in {delay:?}");
            lease.release().await;
            return ack(&message, AckKind::Nak(Some(delay))).await;
        }
        self.runtime.record_processed(&processed);
        self.finish(&message, &subject, processed.result, reply, Some(lease))
            .await;
    }

    /// True when the pool's backend fails its health check now.
    async fn backend_down(&self) -> bool {
        let check = self.runtime.backend().health();
        !matches!(
            tokio::time::timeout(crate::metrics::health::CHECK_TIMEOUT, check).await,
            Ok(Ok(()))
        )
    }

    /// A job refused before it ran: audited as `rejected`, and the refusal stored as its result
    /// (sent to `reply` too, when that was allowed), so the agent learns why.
    async fn refuse(
        &self,
        message: &Message,
        tenant: &str,
        id: &str,
        error: ErrorInfo,
        reply: Option<&str>,
    ) {
        tracing::info!(%id, %tenant, kind = %error.kind, "queued job refused: {}", error.message);
        let result = self
            .runtime
            .refuse_raw(
                tenant,
                id,
                &message.payload,
                trace::from_message(message),
                error,
            )
            .await;
        self.finish(
            message,
            &self.subjects.result(tenant, id),
            result,
            reply,
            None,
        )
        .await;
    }

    /// A delivery of a job whose result is stored already (a resubmission, or a job cancelled
    /// while it was queued): not run, audited as `rejected`, removed from the queue.
    async fn already_stored(
        &self,
        message: &Message,
        tenant: &str,
        id: &str,
        stored: Option<&ExecResult>,
    ) {
        let cancelled = stored.is_some_and(|stored| {
            stored.status == Verdict::Cancelled
                && stored.error.as_ref().map(|error| error.kind) == Some(ErrorKind::Cancelled)
        });
        let status = stored.map_or("unreadable", |stored| stored.status.as_str());
        let error = if cancelled {
            ErrorInfo::new(
                ErrorKind::Cancelled,
                "the job was cancelled before it started; it was not run",
            )
        } else {
            ErrorInfo::new(
                ErrorKind::DuplicateJob,
                format!(
                    "job `{id}` of tenant `{tenant}` already has a stored result ({status}); it was not run again. Fetch it with `openshell result {id}`, or submit under a new id"
                ),
            )
        };
        tracing::info!(%id, %tenant, "job already has a stored result; not run again");
        self.runtime
            .refuse_raw(
                tenant,
                id,
                &message.payload,
                trace::from_message(message),
                error,
            )
            .await;
        ack(message, AckKind::Ack).await;
    }

    /// Runs the job, sending an in-progress ack and renewing its lease every third of
    /// `ack_wait`; a lost lease stops the run and comes back as `None`.
    async fn process_with_progress(
        &self,
        message: &Message,
        tenant: &str,
        id: &str,
        reserved: Option<DispatchPermit>,
        mut lease: Lease,
    ) -> (Processed, Option<Lease>) {
        let traceparent = trace::from_header(message);
        let waiting = reserved.map_or(Waiting::Unbounded, Waiting::Reserved);
        let work = self
            .runtime
            .process(tenant, &message.payload, traceparent, waiting);
        tokio::pin!(work);
        let mut ticker = tokio::time::interval(self.settings.ack_wait.as_duration() / 3);
        ticker.tick().await;
        loop {
            tokio::select! {
                processed = &mut work => return (processed, Some(lease)),
                _ = ticker.tick() => {
                    if let Err(error) = message.ack_with(AckKind::Progress).await {
                        tracing::warn!(%error, "in-progress ack failed; the job may be redelivered");
                    }
                    if let Err(lost) = lease.renew().await {
                        tracing::error!(%lost, %id, %tenant, "stopping the run");
                        self.runtime.running().cancel(tenant, id);
                        return ((&mut work).await, None);
                    }
                }
            }
        }
    }

    /// Stores `result` (retrying while NATS recovers), then sends it to `reply` (checked by the
    /// caller), acks and releases the run's `lease`, all three at once: the stored result is
    /// what makes a later delivery a duplicate, so nothing after it needs to wait for another.
    /// Left unacked when it cannot be stored, so it is redelivered.
    async fn finish(
        &self,
        message: &Message,
        subject: &str,
        mut result: ExecResult,
        reply: Option<&str>,
        lease: Option<Lease>,
    ) {
        let release = async {
            if let Some(lease) = lease {
                lease.release().await;
            }
        };
        let max_payload = crate::reply::max_payload(&self.nats);
        // The run holds the job's lease (for `ack_wait`) until its result is stored: retrying
        // for half of that (a stream leader election takes seconds) beats leaving the job to
        // be run again.
        let give_up = tokio::time::Instant::now() + self.settings.ack_wait.as_duration() / 2;
        let mut attempt = 0;
        let stored = loop {
            attempt += 1;
            match results::store(&self.jetstream, subject, &mut result, max_payload).await {
                Ok(stored) => break stored,
                Err(error) if tokio::time::Instant::now() < give_up => {
                    tracing::warn!(%error, attempt, "storing the result failed; retrying");
                    tokio::time::sleep(STORE_RETRY).await;
                }
                Err(error) => {
                    tracing::error!(%error, id = %result.id, "result not stored; the job will be redelivered");
                    return release.await;
                }
            }
        };
        let send = async {
            if stored == Stored::AlreadyThere {
                tracing::info!(id = %result.id, status = %result.status, "the job already had a stored result; this one is dropped");
            } else if let Some(reply) = reply
                && let Err(error) = self.runtime.replier().reply(reply, &mut result).await
            {
                let cause = &error.source;
                tracing::warn!(%error, %cause, id = %result.id, "result stored but not sent to the reply subject");
            }
        };
        tokio::join!(send, ack(message, AckKind::Ack), release);
    }

    fn worker_lost(&self, job: &Message, tenant: &str, id: &str, started: u32) -> ExecResult {
        tracing::error!(%id, %tenant, started, "job started max_deliver times without a result: storing worker_lost");
        let message = format!(
            "the job was started {started} times and its worker was lost each time (max_deliver {}); it was not run again",
            self.settings.max_deliver
        );
        let mut result = ExecResult::failed(id, ErrorInfo::new(ErrorKind::Internal, message));
        result.status = Verdict::WorkerLost;
        result.tenant = tenant.to_string();
        result.pool = self.runtime.name().to_string();
        result.backend = self.runtime.backend().kind().to_string();
        result.worker_id = self.runtime.worker_id().to_string();
        result.traceparent = trace::from_message(job).map(Traceparent::into_string);
        result
    }

    /// A job whose result has nowhere to go: logged and removed from the queue.
    async fn unstorable(&self, message: &Message, why: &str) {
        tracing::warn!(subject = %message.subject, "dropping a queued job: {why}; submit jobs with `openshell submit`");
        ack(message, AckKind::Term).await;
    }
}

async fn ack(message: &Message, kind: AckKind) {
    if let Err(error) = message.double_ack_with(kind).await {
        tracing::warn!(%error, subject = %message.subject, "ack to JetStream failed; the job may be redelivered");
    }
}
