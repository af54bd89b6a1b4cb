//! The result a worker publishes on the request's reply subject.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;
use crate::error::{ErrorInfo, ErrorKind};
use crate::limits::{LimitName, Limits};
use crate::outputs::ReturnedFiles;
use crate::payload::Payload;
use crate::signal::signal_name;

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The program ran and exited (with any exit code) or was killed by a signal of its own.
    Completed,
    /// The program ran past its wall timeout and was killed.
    Timeout,
    /// The program hit its memory limit.
    OutOfMemory,
    /// The program wrote more than its output limit and was stopped.
    OutputLimit,
    /// The job moved more bytes through the egress proxy than its pool allows; its connections
    /// were cut (the program may have gone on without them).
    NetworkLimit,
    /// The job was cancelled before or while running.
    Cancelled,
    /// The request was refused before running (see `error`).
    Rejected,
    /// The job's deadline passed before it started.
    Expired,
    /// The backend failed (see `error`); the program may not have run.
    BackendError,
    /// The worker running the job was lost and redelivery gave up (durable mode).
    WorkerLost,
}

impl Verdict {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Completed => "completed",
            Verdict::Timeout => "timeout",
            Verdict::OutOfMemory => "out_of_memory",
            Verdict::OutputLimit => "output_limit",
            Verdict::NetworkLimit => "network_limit",
            Verdict::Cancelled => "cancelled",
            Verdict::Rejected => "rejected",
            Verdict::Expired => "expired",
            Verdict::BackendError => "backend_error",
            Verdict::WorkerLost => "worker_lost",
        }
    }

    /// The verdict that goes with an error of `kind`.
    pub fn for_error(kind: ErrorKind) -> Verdict {
        match kind {
            ErrorKind::TimeoutExceeded => Verdict::Timeout,
            ErrorKind::OutOfMemory => Verdict::OutOfMemory,
            ErrorKind::OutputLimitExceeded => Verdict::OutputLimit,
            ErrorKind::NetworkLimitExceeded => Verdict::NetworkLimit,
            // A job the worker dropped at shutdown was cancelled, not refused: resubmit it.
            ErrorKind::Cancelled | ErrorKind::ShuttingDown => Verdict::Cancelled,
            ErrorKind::DeadlineExpired => Verdict::Expired,
            ErrorKind::ConnectionFailed
            | ErrorKind::PermissionDenied
            | ErrorKind::SandboxStartFailed
            | ErrorKind::SandboxLost
            | ErrorKind::SessionLost
            | ErrorKind::Internal => Verdict::BackendError,
            ErrorKind::InvalidRequest
            | ErrorKind::PayloadTooLarge
            | ErrorKind::UnsupportedVersion
            | ErrorKind::LimitExceedsPolicy
            | ErrorKind::LimitNotEnforceable
            | ErrorKind::TenantNotAllowed
            | ErrorKind::LanguageNotAllowed
            | ErrorKind::NetworkNotAllowed
            | ErrorKind::DuplicateJob
            | ErrorKind::Overloaded
            | ErrorKind::ReplyNotAllowed
            | ErrorKind::NotFound
            | ErrorKind::SessionBusy
            | ErrorKind::SessionLimit
            | ErrorKind::SessionsUnsupported => Verdict::Rejected,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a backend enforced a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnforcementStatus {
    /// Enforced as asked.
    Enforced,
    /// Enforced in part; `mechanism` says what was and was not covered.
    Partial,
    /// Not enforced (only possible where the pool allows unenforced limits).
    NotEnforced,
}

/// How one limit was enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Enforcement {
    /// Whether it was enforced.
    pub status: EnforcementStatus,
    /// How, e.g. `setrlimit(RLIMIT_AS)` or `cgroup memory.max`; or why not.
    pub mechanism: String,
}

impl Enforcement {
    /// Enforced by `mechanism`.
    pub fn enforced(mechanism: impl Into<String>) -> Self {
        Self {
            status: EnforcementStatus::Enforced,
            mechanism: mechanism.into(),
        }
    }
    /// Partly enforced by `mechanism`.
    pub fn partial(mechanism: impl Into<String>) -> Self {
        Self {
            status: EnforcementStatus::Partial,
            mechanism: mechanism.into(),
        }
    }
    /// Not enforced, for `reason`.
    pub fn not_enforced(reason: impl Into<String>) -> Self {
        Self {
            status: EnforcementStatus::NotEnforced,
            mechanism: reason.into(),
        }
    }
}

/// For each requested limit, how the backend enforced it.
pub type EnforcementReport = BTreeMap<LimitName, Enforcement>;

/// The outcome of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecResult {
    /// Protocol version (1).
    pub version: u32,
    /// The request's id (`""` when the request was too malformed to carry one).
    pub id: String,
    /// How the job ended.
    pub status: Verdict,
    /// The program's exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that killed the program, when one did (Linux numbering: 9 is SIGKILL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The name of `signal` as `kill -l` spells it (`SIGKILL`), when `signal` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_name: Option<String>,
    /// Standard output, up to the output limit.
    #[serde(default)]
    pub stdout: Payload,
    /// Standard error, up to the output limit.
    #[serde(default)]
    pub stderr: Payload,
    /// True when stdout was cut at the output limit.
    #[serde(default)]
    pub stdout_truncated: bool,
    /// True when stderr was cut at the output limit.
    #[serde(default)]
    pub stderr_truncated: bool,
    /// Wall time from program start to end, in milliseconds.
    #[serde(default)]
    pub wall_time_ms: u64,
    /// CPU time (user + system) of the program, where the backend measures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_ms: Option<u64>,
    /// Peak memory of the program in bytes, where the backend measures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// Time from the worker receiving the request to the program starting, in milliseconds.
    #[serde(default)]
    pub queue_time_ms: u64,
    /// Tenant the job ran for (from the subject).
    #[serde(default)]
    pub tenant: String,
    /// Pool that took the job.
    #[serde(default)]
    pub pool: String,
    /// Backend that ran the job (`docker`, `ssh`, `none`, ...).
    #[serde(default)]
    pub backend: String,
    /// Worker that took the job.
    #[serde(default)]
    pub worker_id: String,
    /// The limits in force after applying the pool's defaults.
    #[serde(default)]
    pub limits: Limits,
    /// For each limit in force, how it was enforced.
    #[serde(default)]
    pub enforcement: EnforcementReport,
    /// The files the request's `outputs` asked for; set when it asked for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<ReturnedFiles>,
    /// Set when the verdict is not `completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// The request's W3C `traceparent` (NATS header, else request field), when it had a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"))]
    pub traceparent: Option<String>,
    /// The session the job ran in, for a job sent on a session's subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// True when the session's kernel was restarted after this job (it timed out, was
    /// cancelled or the interpreter died): variables and imports are lost, files are kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kernel_restarted: bool,
}

impl ExecResult {
    /// The result as JSON of at most `max_bytes` (a NATS server's `max_payload`): stdout and
    /// stderr are cut, larger first, and marked truncated until it fits.
    pub fn encode_within(&mut self, max_bytes: usize) -> Vec<u8> {
        loop {
            let encoded = serde_json::to_vec(&*self).unwrap_or_default();
            let (stdout, stderr) = (self.stdout.len(), self.stderr.len());
            if encoded.len() <= max_bytes || stdout + stderr == 0 {
                return encoded;
            }
            let excess = encoded.len() - max_bytes;
            // Cut the larger stream by the excess (base64 can make it 4/3 larger) plus a margin.
            let cut = excess + excess / 3 + 64;
            let (stream, truncated) = if stdout >= stderr {
                (&mut self.stdout.0, &mut self.stdout_truncated)
            } else {
                (&mut self.stderr.0, &mut self.stderr_truncated)
            };
            let keep = stream.len().saturating_sub(cut);
            stream.truncate(keep);
            *truncated = true;
        }
    }

    /// An empty result for job `id` with `status`.
    pub fn new(id: impl Into<String>, status: Verdict) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            id: id.into(),
            status,
            exit_code: None,
            signal: None,
            signal_name: None,
            stdout: Payload::default(),
            stderr: Payload::default(),
            stdout_truncated: false,
            stderr_truncated: false,
            wall_time_ms: 0,
            cpu_time_ms: None,
            peak_memory_bytes: None,
            queue_time_ms: 0,
            tenant: String::new(),
            pool: String::new(),
            backend: String::new(),
            worker_id: String::new(),
            limits: Limits::default(),
            enforcement: EnforcementReport::new(),
            outputs: None,
            error: None,
            traceparent: None,
            session: None,
            kernel_restarted: false,
        }
    }

    /// Sets `signal`, and `signal_name` to go with it.
    pub fn set_signal(&mut self, signal: Option<i32>) {
        self.signal = signal;
        self.signal_name = signal.and_then(signal_name);
    }

    /// A result for a job that ended with `error` before or instead of completing.
    pub fn failed(id: impl Into<String>, error: ErrorInfo) -> Self {
        let mut result = Self::new(id, Verdict::for_error(error.kind));
        result.error = Some(error);
        result
    }
}
