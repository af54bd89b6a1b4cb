//! One job's path through a worker: decode → admit → audit `received` → wait for a slot →
//! audit `started` → backend → reply → audit `finished`. Every request gets exactly one reply.

mod outcome;

use std::sync::Arc;
use std::time::Instant;

use async_nats::Message;
use bytes::Bytes;
use chrono::Utc;
use openshell_protocol::audit::AuditContext;
use openshell_protocol::decode::{decode_request, salvage_id};
use openshell_protocol::subjects::check_token;
use openshell_protocol::{
    AuditEvent, AuditEventType, ErrorInfo, ErrorKind, ExecRequest, ExecResult, Subjects, Verdict,
};
use openshell_scheduler::deadline::check_deadline;
use openshell_scheduler::{Admitted, PoolPolicy, RunningJobs, Slots, admit};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::audit::AuditPublisher;
use crate::backend::{Backend, Capabilities, Job, JobControl, JobFile, OutputSink};
use crate::config::PoolConfig;

pub use outcome::encode_within;

/// Everything a pool needs to run jobs; shared by all its in-flight jobs.
pub struct PoolRuntime {
    /// Pool name.
    pub name: String,
    /// Pool configuration.
    pub config: PoolConfig,
    /// Admission policy derived from the configuration.
    pub policy: PoolPolicy,
    /// The backend.
    pub backend: Arc<dyn Backend>,
    /// What the backend can enforce (read once).
    pub capabilities: Capabilities,
    /// Concurrency bound.
    pub slots: Slots,
    /// Running jobs, shared with the cancel listener.
    pub running: RunningJobs,
    /// Audit publisher.
    pub audit: AuditPublisher,
    /// NATS connection for replies.
    pub nats: async_nats::Client,
    /// Subject scheme.
    pub subjects: Subjects,
    /// This worker's id.
    pub worker_id: String,
    /// Largest request accepted.
    pub max_request_bytes: usize,
    /// Cancelled when the worker stops taking jobs.
    pub shutdown: CancellationToken,
}

impl PoolRuntime {
    /// Handles one request message to its single reply.
    pub async fn handle(self: Arc<Self>, message: Message) {
        let received = Instant::now();
        let tenant = self
            .subjects
            .parse_exec(&message.subject)
            .map(|(_, tenant)| tenant.to_string())
            .unwrap_or_default();
        let context = AuditContext {
            tenant: tenant.clone(),
            pool: self.name.clone(),
            backend: self.backend.kind().to_string(),
            worker_id: self.worker_id.clone(),
        };
        let span = tracing::info_span!("job", id = tracing::field::Empty, tenant = %tenant, pool = %self.name);
        let result = self
            .process(&message, &context, received)
            .instrument(span)
            .await;
        self.reply(&message, result).await;
    }

    async fn process(
        &self,
        message: &Message,
        context: &AuditContext,
        received: Instant,
    ) -> ExecResult {
        let raw = &message.payload;
        let request = match self.decode(raw, &context.tenant) {
            Ok(request) => request,
            Err(error) => {
                let id = salvage_id(raw).unwrap_or_default();
                tracing::Span::current().record("id", id.as_str());
                tracing::info!(kind = %error.kind, "request rejected: {}", error.message);
                self.audit_quietly(&AuditEvent::rejected_raw(&id, raw, error.clone(), context))
                    .await;
                return self.stamp(ExecResult::failed(id, error), context);
            }
        };
        tracing::Span::current().record("id", request.id.as_str());
        let admitted = match admit(
            &request,
            &context.tenant,
            &self.policy,
            &self.capabilities,
            Utc::now(),
        ) {
            Ok(admitted) => admitted,
            Err(rejection) => {
                return self
                    .reject(&request, raw.len(), context, rejection.into())
                    .await;
            }
        };
        let guard = match self.running.register(&context.tenant, &request.id) {
            Ok(guard) => guard,
            Err(rejection) => {
                return self
                    .reject(&request, raw.len(), context, rejection.into())
                    .await;
            }
        };
        let received_event = AuditEvent::for_request(
            AuditEventType::Received,
            &request,
            raw.len(),
            &admitted.limits,
            context,
        );
        if let Err(error) = self.audit.publish_flushed(&received_event).await {
            tracing::error!(%error, "audit unavailable: job not run");
            let info = ErrorInfo::new(
                ErrorKind::Internal,
                format!("{error}; the job was not run because it could not be audited first"),
            );
            return self.stamp(ExecResult::failed(&request.id, info), context);
        }
        let cancel = guard.token().clone();
        let mut result = self.base_result(&request, &admitted, context);
        let _slot = tokio::select! {
            slot = self.slots.acquire() => slot,
            () = cancel.cancelled() => return self.finish(received_event, self.ended_early(result, "cancelled while queued")).await,
            () = self.shutdown.cancelled() => return self.finish(received_event, self.ended_early(result, "")).await,
        };
        result.queue_time_ms = received.elapsed().as_millis() as u64;
        if let Err(rejection) = check_deadline(request.deadline, Utc::now()) {
            result = ExecResult {
                status: Verdict::Expired,
                error: Some(rejection.into()),
                ..result
            };
            return self.finish(received_event, result).await;
        }
        let started = AuditEvent {
            event: AuditEventType::Started,
            timestamp: Utc::now(),
            code: None,
            ..received_event.clone()
        };
        self.audit_quietly(&started).await;
        let Some(job) = self.job(&request, &admitted, &context.tenant) else {
            let info = ErrorInfo::new(
                ErrorKind::Internal,
                "the pool's language table changed under the job",
            );
            return self
                .finish(
                    received_event,
                    ExecResult {
                        status: Verdict::BackendError,
                        error: Some(info),
                        ..result
                    },
                )
                .await;
        };
        let output = OutputSink::new(
            admitted
                .limits
                .output
                .map_or(u64::MAX, |output| output.bytes()),
        );
        tracing::debug!(argv = ?job.argv, files = job.files.len(), limits = ?job.limits, "sending job to backend");
        let control = JobControl {
            cancel: cancel.clone(),
            output: output.clone(),
        };
        let outcome = self.backend.execute(job, control).await;
        outcome::apply_execution(
            &mut result,
            outcome,
            output.snapshot(),
            self.running.is_aborted(),
        );
        tracing::debug!(status = %result.status, exit_code = ?result.exit_code, stdout = %result.stdout.to_text_lossy(), stderr = %result.stderr.to_text_lossy(), "backend returned");
        tracing::info!(status = %result.status, exit_code = ?result.exit_code, wall_ms = result.wall_time_ms, "job finished");
        self.finish(received_event, result).await
    }

    fn decode(&self, raw: &Bytes, tenant: &str) -> Result<ExecRequest, ErrorInfo> {
        check_token("tenant", tenant)
            .map_err(|error| ErrorInfo::new(ErrorKind::InvalidRequest, error.to_string()))?;
        decode_request(raw, self.max_request_bytes).map_err(|error| error.to_info())
    }

    fn ended_early(&self, mut result: ExecResult, why: &str) -> ExecResult {
        let (kind, message) = if why.is_empty() {
            (
                ErrorKind::ShuttingDown,
                "the worker is shutting down and did not start the job; resubmit it".to_string(),
            )
        } else {
            (ErrorKind::Cancelled, format!("the job was {why}"))
        };
        result.status = Verdict::Cancelled;
        result.error = Some(ErrorInfo::new(kind, message));
        result
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
        if let Err(error) = self.audit.publish(event).await {
            tracing::error!(%error, "audit event lost");
        }
    }

    fn stamp(&self, mut result: ExecResult, context: &AuditContext) -> ExecResult {
        result.tenant = context.tenant.clone();
        result.pool = context.pool.clone();
        result.backend = context.backend.clone();
        result.worker_id = context.worker_id.clone();
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

    fn job(&self, request: &ExecRequest, admitted: &Admitted, tenant: &str) -> Option<Job> {
        let mut files: Vec<JobFile> = request
            .files
            .iter()
            .map(|file| JobFile {
                path: file.path.clone(),
                content: file.content.0.clone(),
                mode: file.mode.unwrap_or(0o644),
            })
            .collect();
        let argv = match (&request.language, &request.code, &request.command) {
            (Some(language), Some(code), _) => {
                // Admission checked the language is in this pool's table.
                let spec = self.config.languages.get(language)?;
                let (argv, code_file) = spec.resolve(code, &request.args);
                files.retain(|file| file.path != code_file.path);
                files.push(code_file);
                argv
            }
            (_, _, Some(command)) => command.iter().chain(&request.args).cloned().collect(),
            _ => Vec::new(),
        };
        Some(Job {
            id: request.id.clone(),
            tenant: tenant.to_string(),
            language: request.language.clone(),
            argv,
            stdin: request.stdin.clone().unwrap_or_default(),
            env: request.env.clone(),
            files,
            limits: admitted.limits.clone(),
            network: request.network,
        })
    }

    async fn reply(&self, message: &Message, mut result: ExecResult) {
        let Some(reply) = &message.reply else {
            tracing::warn!(id = %result.id, "request had no reply subject; result dropped (audit has it)");
            return;
        };
        let max = self.nats.server_info().max_payload.max(64 * 1024);
        let payload = encode_within(&mut result, max);
        if let Err(error) = self.nats.publish(reply.clone(), Bytes::from(payload)).await {
            tracing::error!(%error, id = %result.id, "could not publish the result");
        }
    }
}
