//! Audit events, published on `<prefix>.audit.<tenant>.<pool>.<event>`.
//!
//! For every request a worker publishes either a lone `rejected` (refused at admission), or
//! `received`, then `started` (unless the job ends while queued) and `finished`. `received` is
//! flushed to the server before any code runs and carries the code or command itself, every
//! file's hash and the effective limits.
//!
//! Every event also carries its place in its worker's hash chain (`chain`, `seq`, `prev`), and
//! workers sign [`AuditCheckpoint`]s of their chains: [`chain`] defines both.

pub mod chain;

pub use chain::{AuditCheckpoint, CheckpointKind, GENESIS_HASH, UnstoredEvent};

use std::fmt;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;
use crate::error::ErrorInfo;
use crate::limits::Limits;
use crate::path::RelativePath;
use crate::request::{ExecRequest, sha256_hex};
use crate::result::{ExecResult, Verdict};
use crate::signal::signal_name;
use crate::traceparent::Traceparent;

/// Which step of a job an audit event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditEventType {
    /// A valid request was admitted; nothing has run yet.
    Received,
    /// A request was refused before running (malformed, over policy, expired, ...).
    Rejected,
    /// The backend is about to start the program.
    Started,
    /// The job ended; carries the verdict and resource use.
    Finished,
    /// A session was opened (`session` names it; `limits` are the sandbox's).
    SessionOpened,
    /// A session was closed by its tenant or its worker's shutdown.
    SessionClosed,
    /// A session ended because its `ttl` or `idle` time passed.
    SessionExpired,
    /// The job tried to open a connection through the egress proxy; carries `network`.
    Network,
}

impl AuditEventType {
    /// The wire name, also the last subject token.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEventType::Received => "received",
            AuditEventType::Rejected => "rejected",
            AuditEventType::Started => "started",
            AuditEventType::Finished => "finished",
            AuditEventType::SessionOpened => "session_opened",
            AuditEventType::SessionClosed => "session_closed",
            AuditEventType::SessionExpired => "session_expired",
            AuditEventType::Network => "network",
        }
    }
}

impl fmt::Display for AuditEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file of the request, as audited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditedFile {
    /// Path inside the working directory.
    pub path: RelativePath,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the contents.
    pub sha256: String,
}

/// What a finished job used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceUsage {
    /// Exit code, when the program exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Killing signal, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The killing signal's name (`SIGKILL`), when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_name: Option<String>,
    /// Wall time in milliseconds.
    pub wall_time_ms: u64,
    /// CPU time in milliseconds, where measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_ms: Option<u64>,
    /// Peak memory in bytes, where measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// Bytes of stdout kept.
    pub stdout_bytes: u64,
    /// Bytes of stderr kept.
    pub stderr_bytes: u64,
}

/// One connection attempt of a job through the egress proxy, on a `network` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkAttempt {
    /// The destination as the job named it: a host name or an IP address.
    pub destination: String,
    /// Destination port.
    pub port: u16,
    /// Whether the proxy let the connection through.
    pub allowed: bool,
    /// The address connected to, when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Bytes from the job to the destination.
    pub bytes_sent: u64,
    /// Bytes from the destination to the job.
    pub bytes_received: u64,
    /// Why it was denied or cut, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// Protocol version (1).
    pub version: u32,
    /// Which step this records.
    pub event: AuditEventType,
    /// The job id (`""` when a rejected request carried none).
    pub job_id: String,
    /// Tenant, from the request subject.
    pub tenant: String,
    /// Pool that took the request.
    pub pool: String,
    /// Backend of the pool.
    pub backend: String,
    /// Worker that published the event.
    pub worker_id: String,
    /// When the event happened (RFC 3339, UTC).
    pub timestamp: DateTime<Utc>,
    // The program, as `ExecRequest` has it: the same names, types and skip rules. They are not
    // one `#[serde(flatten)]` struct because the request cannot take it: serde reads flattened
    // fields (and finds unknown ones) only after the closing brace, so the decoder could no
    // longer say which field a type error is in, nor list the known fields.
    /// Language of `code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The code, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The argv, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Extra arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Hex SHA-256 of the code (UTF-8), or of the argv joined by NUL bytes; for a rejected
    /// request, of the raw request bytes.
    pub sha256: String,
    /// Size of the raw request in bytes.
    pub request_bytes: u64,
    /// Files of the request, by hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<AuditedFile>,
    /// Hex SHA-256 of stdin, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_sha256: Option<String>,
    /// Names of the environment variables set (values are not audited).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_keys: Vec<String>,
    /// Effective limits after the pool's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Verdict, on `finished` and `rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Resource use, on `finished`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ResourceUsage>,
    /// Files returned to the client (the request's `outputs`), by hash, on `finished`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<AuditedFile>,
    /// One connection attempt, on `network`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkAttempt>,
    /// Error, on `rejected` and failed `finished`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// The request's W3C `traceparent`, when it had a valid one (on every event of the job
    /// from the moment it is known: a request that does not decode has only the header's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"))]
    pub traceparent: Option<String>,
    /// The worker's chain this event is part of: one per start of a worker process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// Position in `chain`, from 1, with no gaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Lowercase hex SHA-256 of the previous event of `chain` as published (its payload bytes);
    /// [`GENESIS_HASH`] for `seq` 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    /// The session the event belongs to: on session events, and on every event of a job run
    /// in a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// Where an event happened: identity fields shared by every event of one job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditContext {
    /// Tenant from the subject.
    pub tenant: String,
    /// Pool name.
    pub pool: String,
    /// Backend name.
    pub backend: String,
    /// Worker id.
    pub worker_id: String,
    /// The job's valid W3C `traceparent`, if any.
    pub traceparent: Option<Traceparent>,
}

impl AuditEvent {
    fn base(event: AuditEventType, job_id: &str, context: &AuditContext) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            event,
            job_id: job_id.to_string(),
            tenant: context.tenant.clone(),
            pool: context.pool.clone(),
            backend: context.backend.clone(),
            worker_id: context.worker_id.clone(),
            timestamp: Utc::now(),
            language: None,
            code: None,
            command: None,
            args: Vec::new(),
            sha256: String::new(),
            request_bytes: 0,
            files: Vec::new(),
            stdin_sha256: None,
            env_keys: Vec::new(),
            limits: None,
            verdict: None,
            usage: None,
            outputs: Vec::new(),
            network: None,
            error: None,
            traceparent: context.traceparent.as_ref().map(Traceparent::to_string),
            chain: None,
            seq: None,
            prev: None,
            session: None,
        }
    }

    /// A session event of `event` for session `session`, with the sandbox's `limits`.
    pub fn for_session(
        event: AuditEventType,
        session: &str,
        limits: &Limits,
        context: &AuditContext,
    ) -> Self {
        Self {
            session: Some(session.to_string()),
            limits: Some(limits.clone()),
            ..Self::base(event, "", context)
        }
    }

    /// An event of `event` for a valid request, carrying what will run.
    pub fn for_request(
        event: AuditEventType,
        request: &ExecRequest,
        request_bytes: usize,
        limits: &Limits,
        context: &AuditContext,
    ) -> Self {
        Self {
            language: request.language.clone(),
            code: request.code.clone(),
            command: request.command.clone(),
            args: request.args.clone(),
            sha256: request.source_sha256(),
            request_bytes: request_bytes as u64,
            files: request
                .files
                .iter()
                .map(|file| AuditedFile {
                    path: file.path.clone(),
                    size: file.content.len() as u64,
                    sha256: sha256_hex(file.content.as_bytes()),
                })
                .collect(),
            stdin_sha256: request
                .stdin
                .as_ref()
                .map(|stdin| sha256_hex(stdin.as_bytes())),
            env_keys: request.env.keys().cloned().collect(),
            limits: Some(limits.clone()),
            ..Self::base(event, &request.id, context)
        }
    }

    /// A `rejected` event for raw bytes that did not make a valid request.
    pub fn rejected_raw(
        job_id: &str,
        raw: &[u8],
        error: ErrorInfo,
        context: &AuditContext,
    ) -> Self {
        Self {
            sha256: sha256_hex(raw),
            request_bytes: raw.len() as u64,
            verdict: Some(Verdict::for_error(error.kind)),
            error: Some(error),
            ..Self::base(AuditEventType::Rejected, job_id, context)
        }
    }

    /// This event turned into the record of `result`: `rejected` when it was built as a
    /// `rejected` event (the job was never admitted), otherwise `finished`. The event type follows
    /// admission, not the verdict, so every `received` is closed by a `finished`, and a request
    /// refused at admission with a verdict other than `rejected` (a passed deadline: `expired`)
    /// is still a lone `rejected`.
    pub fn finish(mut self, result: &ExecResult) -> Self {
        if self.event != AuditEventType::Rejected {
            self.event = AuditEventType::Finished;
        }
        if self.event == AuditEventType::Finished {
            // The code itself is on the job's `received` event; `sha256` links the two.
            self.code = None;
        }
        self.timestamp = Utc::now();
        self.outputs = result.outputs.as_ref().map_or_else(Vec::new, |outputs| {
            outputs
                .files
                .iter()
                .map(|file| AuditedFile {
                    path: file.path.clone(),
                    size: file.size,
                    sha256: file.sha256.clone(),
                })
                .collect()
        });
        self.verdict = Some(result.status);
        self.error = result.error.clone();
        self.usage = Some(ResourceUsage {
            exit_code: result.exit_code,
            signal: result.signal,
            signal_name: result.signal.and_then(signal_name),
            wall_time_ms: result.wall_time_ms,
            cpu_time_ms: result.cpu_time_ms,
            peak_memory_bytes: result.peak_memory_bytes,
            stdout_bytes: result.stdout.len() as u64,
            stderr_bytes: result.stderr.len() as u64,
        });
        self
    }
}
