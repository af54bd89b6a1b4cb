//! Machine-readable error kinds carried in results and audit events.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What went wrong, for programs to match on. The `message` beside it is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is not valid JSON, has wrong types, unknown fields or bad values.
    InvalidRequest,
    /// The request is larger than the worker accepts.
    PayloadTooLarge,
    /// The request's `version` is not one this worker speaks.
    UnsupportedVersion,
    /// A requested limit is above the pool's ceiling.
    LimitExceedsPolicy,
    /// A requested limit cannot be enforced by the pool's backend, and the pool fails closed.
    LimitNotEnforceable,
    /// The tenant (from the subject) may not use this pool.
    TenantNotAllowed,
    /// The pool does not run this language.
    LanguageNotAllowed,
    /// The request asked for network access the pool does not allow.
    NetworkNotAllowed,
    /// A job with the same id and tenant is already running.
    DuplicateJob,
    /// The pool (or the tenant's share of it) has as many jobs waiting as it allows: retry later.
    Overloaded,
    /// The reply subject is one the requesting tenant could not read (another tenant's inbox or
    /// results, an audit or `$` subject): the job was not run and nothing was sent there.
    ReplyNotAllowed,
    /// A stored thing asked for (a returned file) does not exist, or no longer: its TTL passed.
    NotFound,
    /// The job's deadline passed before it could start.
    DeadlineExpired,
    /// The job was cancelled by a client or by worker shutdown.
    Cancelled,
    /// The worker is shutting down and takes no new jobs.
    ShuttingDown,
    /// The backend (Docker daemon, SSH host) could not be reached.
    ConnectionFailed,
    /// The job ran longer than its wall timeout.
    TimeoutExceeded,
    /// The job hit its memory limit.
    OutOfMemory,
    /// The job wrote more output than its limit.
    OutputLimitExceeded,
    /// The job moved more bytes through the egress proxy than its pool allows.
    NetworkLimitExceeded,
    /// The sandbox refused an operation (exit 126, EACCES).
    PermissionDenied,
    /// The sandbox could not be created or started: the job did not run.
    SandboxStartFailed,
    /// The sandbox, or the connection to it, was lost while the job ran: it may have had
    /// side effects; resubmit it if that is safe.
    SandboxLost,
    /// A bug or unexpected state in the worker.
    Internal,
    /// The session is running another job: send this one when that one's result came.
    SessionBusy,
    /// The session's worker is gone (no responder on its subject): its sandbox and state are
    /// lost; open a new session.
    SessionLost,
    /// The tenant has as many sessions open on the pool as it allows: close one first.
    SessionLimit,
    /// The pool's backend cannot hold sessions.
    SessionsUnsupported,
}

impl ErrorKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::UnsupportedVersion => "unsupported_version",
            ErrorKind::LimitExceedsPolicy => "limit_exceeds_policy",
            ErrorKind::LimitNotEnforceable => "limit_not_enforceable",
            ErrorKind::TenantNotAllowed => "tenant_not_allowed",
            ErrorKind::LanguageNotAllowed => "language_not_allowed",
            ErrorKind::NetworkNotAllowed => "network_not_allowed",
            ErrorKind::DuplicateJob => "duplicate_job",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::ReplyNotAllowed => "reply_not_allowed",
            ErrorKind::NotFound => "not_found",
            ErrorKind::DeadlineExpired => "deadline_expired",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::ConnectionFailed => "connection_failed",
            ErrorKind::TimeoutExceeded => "timeout_exceeded",
            ErrorKind::OutOfMemory => "out_of_memory",
            ErrorKind::OutputLimitExceeded => "output_limit_exceeded",
            ErrorKind::NetworkLimitExceeded => "network_limit_exceeded",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::SandboxStartFailed => "sandbox_start_failed",
            ErrorKind::SandboxLost => "sandbox_lost",
            ErrorKind::Internal => "internal",
            ErrorKind::SessionBusy => "session_busy",
            ErrorKind::SessionLost => "session_lost",
            ErrorKind::SessionLimit => "session_limit",
            ErrorKind::SessionsUnsupported => "sessions_unsupported",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as it travels: a kind to match on and a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorInfo {
    /// Machine-readable kind.
    pub kind: ErrorKind,
    /// What failed, where, and what to do about it.
    pub message: String,
}

impl ErrorInfo {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ErrorInfo {}
