//! Sessions ([`openshell_protocol::session`]): a sandbox held for one tenant across jobs.
//!
//! A map of the flow: `serve` subscribes to the session subjects (opens in each pool's queue
//! group; jobs and closes on subjects naming this worker) → `open` checks the request against
//! the pool's `[pools.NAME.sessions]` settings, ceilings and the backend's capabilities, asks
//! the backend for a sandbox, audits `session_opened` and answers → `run` takes each job
//! through the pool's own job path ([`crate::job::PoolRuntime::process`]) with a
//! [`held::SessionRunner`] as backend and every audit event stamped with the session id, one
//! at a time → `end` closes a session (asked, expired, or at shutdown), destroying its sandbox,
//! auditing `session_closed` or `session_expired`, and telling its owner on
//! `<prefix>.session.ended.<tenant>.<session>` when it did not ask.

mod audit;
mod end;
mod held;
mod open;
mod run;
mod serve;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openshell_protocol::audit::AuditContext;
use openshell_protocol::{Limits, Subjects};

use crate::audit::AuditSink;
use crate::job::PoolRuntime;
use crate::metrics::Metrics;
use crate::reply::Replier;

pub use serve::serve;

use self::held::Held;

/// One open session.
pub struct Session {
    /// Its id.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// Its pool.
    pub pool: String,
    /// The sandbox.
    held: Arc<Held>,
    /// The pool's job path, running jobs in the sandbox and stamping the session on audit.
    runtime: PoolRuntime,
    /// Sandbox-wide limits.
    limits: Limits,
    opened: Instant,
    expires: Instant,
    idle: Duration,
    last_used: Mutex<Instant>,
    /// Held while a job runs: one at a time.
    turn: tokio::sync::Mutex<()>,
    jobs: AtomicU64,
}

impl Session {
    fn touch(&self) {
        *self
            .last_used
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Instant::now();
    }

    fn idle_since(&self) -> Instant {
        *self
            .last_used
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Open sessions by `(tenant, id)`, and opens under way by `(pool, tenant)`.
#[derive(Default)]
struct Table {
    sessions: HashMap<(String, String), Arc<Session>>,
    opening: HashMap<(String, String), usize>,
}

/// This worker's sessions and what they need.
pub struct Sessions {
    nats: async_nats::Client,
    subjects: Subjects,
    worker_id: String,
    /// `worker_id` as a subject token.
    token: String,
    audit: Arc<dyn AuditSink>,
    replier: Arc<dyn Replier>,
    metrics: Arc<Metrics>,
    pools: HashMap<String, Arc<PoolRuntime>>,
    table: Mutex<Table>,
}

impl Sessions {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn find(&self, tenant: &str, id: &str) -> Option<Arc<Session>> {
        self.table()
            .sessions
            .get(&(tenant.to_string(), id.to_string()))
            .cloned()
    }

    fn context(&self, tenant: &str, pool: &str, backend: &str) -> AuditContext {
        AuditContext {
            tenant: tenant.to_string(),
            pool: pool.to_string(),
            backend: backend.to_string(),
            worker_id: self.worker_id.clone(),
            traceparent: None,
        }
    }
}

/// `worker_id` as one subject token: characters outside `A-Z a-z 0-9 _ -` become `_`.
pub fn worker_token(worker_id: &str) -> String {
    worker_id
        .chars()
        .take(openshell_protocol::subjects::MAX_TOKEN_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
