//! One job's path through a worker: decode → admit → audit `received` → wait for a slot →
//! audit `started` → backend → reply → audit `finished`. Every request gets exactly one reply.
//!
//! [`PoolRuntime::process`] is the part both paths share: core request/reply
//! ([`PoolRuntime::handle`]) replies with its result, durable mode (`crate::durable`) stores it.
//! The pool's [`PoolRuntime`] (in `runtime`) holds what its jobs share; audit events go to
//! its [`crate::audit::AuditSink`] and core results to its [`crate::reply::Replier`], so
//! tests run the whole path with fakes (`tests`).

pub mod canary;
mod egress;
#[cfg(test)]
pub(crate) mod fakes;
mod live;
mod outcome;
mod prepare;
mod runtime;
#[cfg(test)]
mod tests;
pub mod trace;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Message;
use bytes::Bytes;
use chrono::Utc;
use openshell_protocol::audit::AuditContext;
use openshell_protocol::decode::{decode_request, salvage_id};
use openshell_protocol::subjects::check_token;
use openshell_protocol::{
    AuditEvent, AuditEventType, ErrorInfo, ErrorKind, ExecRequest, ExecResult, Traceparent, Verdict,
};
use openshell_scheduler::deadline::check_deadline;
use openshell_scheduler::{Admitted, DispatchPermit, RunningGuard, Seat, admit};
use tracing::Instrument;

use openshell_backend::{JobControl, OutputSink};

pub use runtime::{PoolRuntime, WorkerContext};

/// A request that passed admission and was audited as `received`.
struct Accepted {
    request: ExecRequest,
    admitted: Admitted,
    guard: RunningGuard,
    received_event: AuditEvent,
    /// How long recording `received_event` took.
    audit_time: Duration,
}

/// What [`PoolRuntime::process`] made of one request.
pub struct Processed {
    /// The job's one result.
    pub result: ExecResult,
    /// False when the `received` audit event could not be recorded: the code did not run.
    pub audited: bool,
    timings: Timings,
}

/// A request that was not accepted: the result to give, and whether it was audited.
struct Refused {
    result: ExecResult,
    audited: bool,
}

impl From<ExecResult> for Refused {
    fn from(result: ExecResult) -> Self {
        Self {
            result,
            audited: true,
        }
    }
}

/// How a job gets its slot.
pub enum Waiting {
    /// It waits for one, holding its place in the pool's waiting room until then.
    Seat(Seat),
    /// It was given one already.
    Reserved(DispatchPermit),
    /// It waits for one; its caller bounds how many wait (durable mode pulls only for free
    /// slots).
    Unbounded,
}

/// When a job reached each step, for the worker-overhead histograms.
struct Timings {
    received: Instant,
    /// Until the `received` audit event was acknowledged (flushed, or stored by JetStream).
    audit: Duration,
    slot_wait: Duration,
    backend: Option<(Instant, Instant)>,
}

impl Timings {
    fn now() -> Self {
        Self {
            received: Instant::now(),
            audit: Duration::ZERO,
            slot_wait: Duration::ZERO,
            backend: None,
        }
    }
}

impl PoolRuntime {
    /// The tenant a request message was sent as (empty when the subject names none, which
    /// decoding then refuses).
    pub fn tenant_of(&self, message: &Message) -> String {
        self.subjects
            .parse_exec(&message.subject)
            .map(|(_, tenant)| tenant.to_string())
            .unwrap_or_default()
    }

    /// Handles one request message, holding `seat` until it gets a slot, to its single reply.
    /// A request whose reply subject the tenant could not read is refused and not answered.
    pub async fn handle(self: Arc<Self>, message: Message, seat: Seat) {
        let tenant = self.tenant_of(&message);
        let traceparent = trace::from_header(&message);
        if let Some(reply) = &message.reply {
            let id = salvage_id(&message.payload);
            if let Err(refused) = self.subjects.check_reply(&tenant, id.as_deref(), reply) {
                let error = ErrorInfo::new(ErrorKind::ReplyNotAllowed, refused.to_string());
                let id = id.unwrap_or_default();
                let result = self
                    .refuse_raw(&tenant, &id, &message.payload, traceparent, error)
                    .await;
                self.record(&result, &Timings::now());
                return;
            }
        }
        let processed = self
            .process(&tenant, &message.payload, traceparent, Waiting::Seat(seat))
            .await;
        self.reply(&message, processed).await;
    }

    /// Refuses a request that found no seat in the pool's waiting room: `overloaded`.
    pub async fn overloaded(&self, message: &Message, full: openshell_scheduler::Full) {
        let tenant = self.tenant_of(message);
        let id = salvage_id(&message.payload).unwrap_or_default();
        let traceparent = trace::from_header(message);
        let result = self
            .refuse_raw(&tenant, &id, &message.payload, traceparent, full.into())
            .await;
        let reply_allowed = message
            .reply
            .as_ref()
            .is_some_and(|reply| self.subjects.check_reply(&tenant, Some(&id), reply).is_ok());
        let processed = Processed {
            result,
            audited: true,
            timings: Timings::now(),
        };
        if reply_allowed {
            self.reply(message, processed).await;
        } else {
            self.record_processed(&processed);
        }
    }

    /// Refuses request `id` of `tenant` without running it: audits `rejected` (with the raw
    /// request's hash and size) and returns the result to answer with.
    pub async fn refuse_raw(
        &self,
        tenant: &str,
        id: &str,
        raw: &[u8],
        traceparent: Option<Traceparent>,
        error: ErrorInfo,
    ) -> ExecResult {
        let context = self.context(tenant, traceparent);
        if error.kind == ErrorKind::Overloaded {
            // A flood would otherwise become a flood of log lines; the metric counts them.
            tracing::debug!(%id, %tenant, "request refused: {}", error.message);
        } else {
            tracing::info!(%id, %tenant, kind = %error.kind, "request refused: {}", error.message);
        }
        self.audit_quietly(&AuditEvent::rejected_raw(id, raw, error.clone(), &context))
            .await;
        self.stamp(ExecResult::failed(id, error), &context)
    }

    fn context(&self, tenant: &str, traceparent: Option<Traceparent>) -> AuditContext {
        AuditContext {
            tenant: tenant.to_string(),
            pool: self.name.clone(),
            backend: self.backend.kind().to_string(),
            worker_id: self.worker_id.clone(),
            traceparent,
        }
    }

    /// Takes one raw request of `tenant` through admission, audit and the backend to its
    /// result; where the result goes is the caller's business. `traceparent` is the valid W3C
    /// trace context the message's header brought; without one, the request's field stands in.
    /// `waiting` says how the job gets its slot.
    pub async fn process(
        &self,
        tenant: &str,
        raw: &Bytes,
        traceparent: Option<Traceparent>,
        waiting: Waiting,
    ) -> Processed {
        let mut timings = Timings::now();
        let mut context = self.context(tenant, traceparent);
        let span = tracing::info_span!("job", id = tracing::field::Empty, tenant = %tenant, pool = %self.name, traceparent = context.traceparent.as_ref().map(Traceparent::as_str));
        let (result, audited) = async {
            match self.accept(raw, &mut context).await {
                Ok(accepted) => {
                    timings.audit = accepted.audit_time;
                    self.run(accepted, &context, waiting, &mut timings).await
                }
                Err(refused) => (refused.result, refused.audited),
            }
        }
        .instrument(span)
        .await;
        Processed {
            result,
            audited,
            timings,
        }
    }

    /// Decode, admit, register and audit `received`; or the rejection to reply with.
    async fn accept(&self, raw: &Bytes, context: &mut AuditContext) -> Result<Accepted, Refused> {
        let request = match self.decode(raw, &context.tenant) {
            Ok(request) => request,
            Err(error) => {
                let id = salvage_id(raw).unwrap_or_default();
                tracing::Span::current().record("id", id.as_str());
                tracing::info!(kind = %error.kind, "request rejected: {}", error.message);
                self.audit_quietly(&AuditEvent::rejected_raw(&id, raw, error.clone(), context))
                    .await;
                return Err(self.stamp(ExecResult::failed(id, error), context).into());
            }
        };
        tracing::Span::current().record("id", request.id.as_str());
        trace::adopt(context, &request);
        // The backend's capabilities as they are now: a limit it cannot enforce any more is
        // refused here, before anything is audited as started.
        let admission = admit(
            &request,
            &context.tenant,
            &self.policy,
            &self.backend.capabilities(),
            Utc::now(),
        )
        .and_then(|admitted| {
            Ok((
                admitted,
                self.running.register(&context.tenant, &request.id)?,
            ))
        });
        let (admitted, guard) = match admission {
            Ok(pair) => pair,
            Err(rejection) => {
                return Err(self
                    .reject(&request, raw.len(), context, rejection.into())
                    .await
                    .into());
            }
        };
        let received_event = AuditEvent::for_request(
            AuditEventType::Received,
            &request,
            raw.len(),
            &admitted.limits,
            context,
        );
        let audit_start = Instant::now();
        let published = self.audit.publish_flushed(&received_event).await;
        let audit_time = audit_start.elapsed();
        self.metrics.audit(published.is_ok());
        if let Err(error) = published {
            tracing::error!(%error, "audit unavailable: job not run");
            let message =
                format!("{error}; the job was not run because it could not be audited first");
            let info = ErrorInfo::new(ErrorKind::Internal, message);
            return Err(Refused {
                result: self.stamp(ExecResult::failed(&request.id, info), context),
                audited: false,
            });
        }
        Ok(Accepted {
            request,
            admitted,
            guard,
            received_event,
            audit_time,
        })
    }

    /// Wait for a slot, audit `started` (acknowledged, like `received`), run on the backend,
    /// audit `finished`. The flag is false when `started` could not be recorded: the code did
    /// not run.
    async fn run(
        &self,
        accepted: Accepted,
        context: &AuditContext,
        waiting: Waiting,
        timings: &mut Timings,
    ) -> (ExecResult, bool) {
        let Accepted {
            request,
            admitted,
            guard,
            received_event,
            ..
        } = accepted;
        let cancel = guard.token().clone();
        let mut result = self.base_result(&request, &admitted, context);
        let queued = Instant::now();
        let wait_for_slot = async {
            match waiting {
                Waiting::Reserved(slot) => slot,
                Waiting::Seat(seat) => {
                    let slot = self.slots.acquire(&context.tenant, request.priority).await;
                    drop(seat);
                    slot
                }
                Waiting::Unbounded => self.slots.acquire(&context.tenant, request.priority).await,
            }
        };
        let _slot = tokio::select! {
            slot = wait_for_slot => slot,
            () = cancel.cancelled() => return (self.finish(received_event, ended_early(result, ErrorKind::Cancelled)).await, true),
            () = self.shutdown.cancelled() => return (self.finish(received_event, ended_early(result, ErrorKind::ShuttingDown)).await, true),
        };
        timings.slot_wait = queued.elapsed();
        self.metrics.queued(&self.name, timings.slot_wait);
        self.metrics
            .slots(&self.name, self.slots.in_use(), self.slots.available());
        if let Err(rejection) = check_deadline(request.deadline, Utc::now()) {
            result = ExecResult {
                status: Verdict::Expired,
                error: Some(rejection.into()),
                ..result
            };
            return (self.finish(received_event, result).await, true);
        }
        let started = AuditEvent {
            event: AuditEventType::Started,
            timestamp: Utc::now(),
            code: None,
            ..received_event.clone()
        };
        let published = self.audit.publish_flushed(&started).await;
        self.metrics.audit(published.is_ok());
        if let Err(error) = published {
            tracing::error!(%error, "audit unavailable: job not run");
            let message =
                format!("{error}; the job was not run because its start could not be audited");
            result.status = Verdict::BackendError;
            result.error = Some(ErrorInfo::new(ErrorKind::Internal, message));
            return (self.finish(received_event, result).await, false);
        }
        let language = request
            .language
            .as_ref()
            .and_then(|language| self.config.languages.get(language));
        let outputs = self.files.request(&request.outputs);
        let mut job = prepare::build_job(&request, &admitted, &context.tenant, language, outputs);
        let metrics = (Arc::clone(&self.metrics), self.name.clone());
        let egress = match egress::JobEgress::start(
            &admitted.network,
            &self.config.network,
            &started,
            Arc::clone(&self.audit),
            metrics,
        ) {
            Ok(egress) => egress,
            Err(error) => {
                tracing::error!(%error, "egress proxy failed to start: job not run");
                result.status = Verdict::for_error(error.kind);
                result.error = Some(error);
                return (self.finish(received_event, result).await, true);
            }
        };
        job.egress = egress.as_ref().map(egress::JobEgress::endpoint);
        let limit = admitted
            .limits
            .output
            .map_or(u64::MAX, |output| output.bytes());
        let live = request.stream.then(|| {
            let subject = self.subjects.output(&context.tenant, &request.id);
            live::Live::start(
                limit,
                Arc::clone(&self.replier),
                subject,
                request.id.clone(),
            )
        });
        let output = live
            .as_ref()
            .map_or_else(|| OutputSink::new(limit), |live| live.sink().clone());
        tracing::debug!(argv = ?job.argv, files = job.files.len(), limits = ?job.limits, "sending job to backend");
        let control = JobControl {
            cancel,
            output: output.clone(),
        };
        result.queue_time_ms = timings.received.elapsed().as_millis() as u64;
        let backend_start = Instant::now();
        let mut outcome = self.backend.execute(job, control).await;
        let files = outcome
            .as_mut()
            .ok()
            .and_then(|execution| execution.files.take());
        timings.backend = Some((backend_start, Instant::now()));
        if let Some(live) = live {
            // The last chunk goes out before the result does.
            live.finish().await;
        }
        let egress_cap = self.config.network.max_bytes.map(|max| max.bytes());
        if let Err(error) = &outcome
            && never_started(error.kind)
        {
            // Likely an outage: check now, so the pool stops taking jobs until it is back.
            self.readiness.recheck();
        }
        outcome::apply_execution(
            &mut result,
            outcome,
            output.snapshot(),
            self.running.is_aborted(),
        );
        if let Some(egress) = egress {
            // Every attempt is audited before `finished`.
            egress.finish(&mut result, egress_cap).await;
        }
        if !request.outputs.is_empty() {
            let delivered = self
                .files
                .deliver(&context.tenant, &request.id, files)
                .await;
            tracing::debug!(status = ?delivered.status, files = delivered.files.len(), skipped = delivered.skipped_count, "files returned");
            result.outputs = Some(delivered);
        }
        tracing::debug!(status = %result.status, exit_code = ?result.exit_code, stdout = %result.stdout.to_text_lossy(), stderr = %result.stderr.to_text_lossy(), "backend returned");
        tracing::info!(status = %result.status, exit_code = ?result.exit_code, wall_ms = result.wall_time_ms, "job finished");
        if result.status == Verdict::BackendError
            && let Some(error) = &result.error
        {
            // The operator's side of a failure the client sees in its result.
            tracing::warn!(kind = %error.kind, "backend failed the job: {}", error.message);
        }
        drop(_slot);
        self.metrics
            .slots(&self.name, self.slots.in_use(), self.slots.available());
        (self.finish(received_event, result).await, true)
    }

    fn decode(&self, raw: &Bytes, tenant: &str) -> Result<ExecRequest, ErrorInfo> {
        check_token("tenant", tenant)
            .map_err(|error| ErrorInfo::new(ErrorKind::InvalidRequest, error.to_string()))?;
        decode_request(raw, self.max_request_bytes).map_err(|error| error.to_info())
    }

    async fn reject(
        &self,
        request: &ExecRequest,
        size: usize,
        context: &AuditContext,
        error: ErrorInfo,
    ) -> ExecResult {
        tracing::info!(kind = %error.kind, "request rejected: {}", error.message);
        let result = self.stamp(ExecResult::failed(&request.id, error), context);
        let event = AuditEvent::for_request(
            AuditEventType::Rejected,
            request,
            size,
            &request.limits,
            context,
        )
        .finish(&result);
        self.audit_quietly(&event).await;
        result
    }

    async fn finish(&self, received: AuditEvent, result: ExecResult) -> ExecResult {
        self.audit_quietly(&received.finish(&result)).await;
        result
    }

    async fn audit_quietly(&self, event: &AuditEvent) {
        let published = self.audit.publish(event).await;
        self.metrics.audit(published.is_ok());
        if let Err(error) = published {
            tracing::error!(%error, "audit event lost");
        }
    }

    fn stamp(&self, mut result: ExecResult, context: &AuditContext) -> ExecResult {
        result.tenant = context.tenant.clone();
        result.pool = context.pool.clone();
        result.backend = context.backend.clone();
        result.worker_id = context.worker_id.clone();
        result.traceparent = context.traceparent.as_ref().map(Traceparent::to_string);
        result
    }

    fn base_result(
        &self,
        request: &ExecRequest,
        admitted: &Admitted,
        context: &AuditContext,
    ) -> ExecResult {
        let mut result = self.stamp(ExecResult::new(&request.id, Verdict::Completed), context);
        result.limits = admitted.limits.clone();
        result.enforcement = admitted.enforcement.clone();
        result
    }

    async fn reply(&self, message: &Message, processed: Processed) {
        let Processed {
            mut result,
            timings,
            ..
        } = processed;
        if let Some(reply) = &message.reply {
            if let Err(error) = self.replier.reply(reply, &mut result).await {
                let cause = &error.source;
                tracing::error!(%error, %cause, id = %result.id, "could not publish the result");
            }
        } else {
            tracing::warn!(id = %result.id, "request had no reply subject; result dropped (audit has it)");
        }
        self.record(&result, &timings);
    }

    /// Records a processed job's metrics once its result went out.
    pub fn record_processed(&self, processed: &Processed) {
        self.record(&processed.result, &processed.timings);
    }

    fn record(&self, result: &ExecResult, timings: &Timings) {
        let wall = timings.backend.map_or(
            Duration::from_millis(result.wall_time_ms),
            |(start, end)| end - start,
        );
        self.metrics
            .job_ended(&self.name, &result.backend, result.status.as_str(), wall);
        self.metrics
            .tenants
            .job(&result.tenant, result.status.as_str());
        if let (Verdict::Rejected, Some(error)) = (result.status, &result.error) {
            self.metrics.rejected(&self.name, error.kind.as_str());
        }
        if let Some((start, end)) = timings.backend {
            let intake = start
                .saturating_duration_since(timings.received)
                .saturating_sub(timings.slot_wait);
            self.metrics.overhead(&self.name, "intake", intake);
            self.metrics.overhead(&self.name, "audit", timings.audit);
            self.metrics.overhead(&self.name, "reply", end.elapsed());
        }
    }
}

/// True for backend failures that come before the job's program starts (the backend or its
/// sandbox could not be reached or started): the job did not run and may be offered again.
pub fn never_started(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionFailed | ErrorKind::SandboxStartFailed
    )
}

/// `result` ended before running: cancelled by a client, or the worker is shutting down.
fn ended_early(mut result: ExecResult, kind: ErrorKind) -> ExecResult {
    let message = match kind {
        ErrorKind::ShuttingDown => {
            "the worker is shutting down and did not start the job; resubmit it"
        }
        _ => "the job was cancelled while it waited for a slot",
    };
    result.status = Verdict::Cancelled;
    result.error = Some(ErrorInfo::new(kind, message));
    result
}
