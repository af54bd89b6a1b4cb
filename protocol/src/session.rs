//! Sessions: one sandbox kept for a tenant across many jobs, with an optional live interpreter.
//!
//! | message | subject | answer |
//! |---|---|---|
//! | [`SessionOpen`] | `<prefix>.session.open.<pool>.<tenant>` (any worker of the pool) | [`SessionOpened`] or [`SessionError`] |
//! | [`ExecRequest`](crate::ExecRequest) | `<prefix>.session.run.<worker>.<tenant>.<session>` | [`ExecResult`](crate::ExecResult) |
//! | [`SessionClose`] | `<prefix>.session.close.<worker>.<tenant>.<session>` | [`SessionClosed`] or [`SessionError`] |
//!
//! A session lives on the worker that opened it: its job and close subjects name that worker,
//! so routing needs no shared state, and a worker that died leaves no responder, which the
//! client turns into `session_lost` at once. The tenant comes from the subject, as for jobs,
//! and sessions are looked up by tenant and id, so a tenant reaches only its own.
//!
//! One job runs at a time in a session: a job sent while another runs gets `session_busy`
//! (nothing waits). A session ends on [`SessionClose`], when its `ttl` or `idle` time passes,
//! or when its worker stops; its sandbox is then destroyed like a job's.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;
use crate::error::ErrorInfo;
use crate::limits::Limits;
use crate::units::DurationMs;

fn protocol_version() -> u32 {
    PROTOCOL_VERSION
}

/// A live interpreter kept in a session's sandbox between jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kernel {
    /// Python 3: `language: "python"` jobs run as cells in one interpreter, keeping globals.
    Python,
    /// Node.js: `language: "node"` jobs run as cells in one `vm` context, keeping globals.
    Node,
}

impl Kernel {
    /// The request language whose jobs this kernel runs.
    pub fn language(self) -> &'static str {
        match self {
            Kernel::Python => "python",
            Kernel::Node => "node",
        }
    }
}

/// A request to open a session, sent on `<prefix>.session.open.<pool>.<tenant>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionOpen {
    /// Protocol version; must be 1.
    #[serde(default = "protocol_version")]
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    /// Longest life of the session (`"10m"` or milliseconds); the pool's default when absent,
    /// bounded by its ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<DurationMs>,
    /// Close the session after this long without a job; the pool's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<DurationMs>,
    /// Keep an interpreter alive between jobs of its language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Kernel>,
    /// Limits of the whole sandbox (`memory`, `processes`, `disk`, `cpus`); each job still has its
    /// own `timeout`. The pool's defaults fill the rest.
    #[serde(default)]
    pub limits: Limits,
}

impl Default for SessionOpen {
    fn default() -> Self {
        Self {
            version: PROTOCOL_VERSION,
            ttl: None,
            idle: None,
            kernel: None,
            limits: Limits::default(),
        }
    }
}

/// The answer to [`SessionOpen`]: where to send the session's jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionOpened {
    /// Protocol version (1).
    pub version: u32,
    /// The session id (random, 1 to 128 of `A-Z a-z 0-9 _ -`).
    pub session: String,
    /// Subject for the session's jobs ([`ExecRequest`](crate::ExecRequest)s).
    pub subject: String,
    /// Subject for [`SessionClose`].
    pub close_subject: String,
    /// Worker holding the session.
    pub worker_id: String,
    /// Pool it was opened on.
    pub pool: String,
    /// Tenant it belongs to.
    pub tenant: String,
    /// When the session ends at the latest (RFC 3339).
    pub expires_at: DateTime<Utc>,
    /// Idle timeout in force.
    pub idle: DurationMs,
    /// The kernel, if one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Kernel>,
    /// The sandbox-wide limits in force.
    pub limits: Limits,
}

/// A request to close a session, sent on its close subject. The body may be empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionClose {
    /// Protocol version; must be 1.
    #[serde(default = "protocol_version")]
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
}

impl Default for SessionClose {
    fn default() -> Self {
        Self {
            version: PROTOCOL_VERSION,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// Its tenant closed it.
    Closed,
    /// Its `ttl` passed.
    Ttl,
    /// No job came within its `idle` time.
    Idle,
    /// Its worker is shutting down.
    Shutdown,
    /// Its sandbox was lost (the container died or was removed): the job that found it so
    /// got `sandbox_lost`.
    Lost,
}

impl CloseReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Closed => "closed",
            CloseReason::Ttl => "ttl",
            CloseReason::Idle => "idle",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Lost => "lost",
        }
    }
}

/// The answer to [`SessionClose`]; also published on `<prefix>.session.ended.<tenant>.<session>`
/// when a session ends any other way, so its owner learns of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionClosed {
    /// Protocol version (1).
    pub version: u32,
    /// The session id.
    pub session: String,
    /// Why it ended.
    pub reason: CloseReason,
    /// Jobs it ran.
    pub jobs: u64,
    /// Times its kernel was restarted after a timeout or a crash.
    pub kernel_restarts: u64,
    /// How long it lived, in milliseconds.
    pub lifetime_ms: u64,
}

/// A refused session request: `session_limit`, `not_found`, `invalid_request`, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionError {
    /// Protocol version (1).
    pub version: u32,
    /// What went wrong.
    pub error: ErrorInfo,
}

impl SessionError {
    /// The answer carrying `error`.
    pub fn new(error: ErrorInfo) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            error,
        }
    }
}

/// Either answer of the worker to a session request, as a client reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SessionReply<T> {
    /// The request succeeded.
    Ok(T),
    /// It was refused.
    Err(SessionError),
}
