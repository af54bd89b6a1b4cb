//! The pool's hosts: jobs spread across them round-robin; a host that fails is skipped, with
//! a growing back-off, until a connection to it succeeds again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use deadpool::managed::PoolError;

use super::error::SshError;
use super::pool::{self, LeaseManager, LeasePool, OnConnect, PooledLease};

/// First back-off after a failure; it doubles up to the configured maximum.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Whether a host is up, as the last attempts found it.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    connected_once: bool,
    down_until: Option<Instant>,
    failures: u32,
}

impl Health {
    /// A connection succeeded: logs the (re)connection the first time and after an outage.
    pub fn connected(&self, addr: &str) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.connected_once || state.failures > 0 {
            tracing::info!(host = %addr, "OpenShell: SSH backend connected to {addr}");
        }
        *state = HealthState {
            connected_once: true,
            ..HealthState::default()
        };
    }

    /// An attempt failed: skip the host for a while.
    fn failed(&self, addr: &str, error: &SshError, max_backoff: Duration) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.failures += 1;
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << state.failures.min(16).saturating_sub(1))
            .min(max_backoff);
        state.down_until = Some(Instant::now() + backoff);
        tracing::warn!(host = %addr, failures = state.failures, retry_in = ?backoff, "SSH host skipped: {error}");
    }

    /// Not in a back-off period.
    fn up(&self, now: Instant) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.down_until.is_none_or(|until| until <= now)
    }

    fn retry_at(&self) -> Option<Instant> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .down_until
    }
}

/// One remote host: its address, its lease pool, and its health.
pub struct Host {
    /// host:port.
    pub addr: String,
    /// Leases on its connections.
    pub pool: LeasePool,
    /// Up or skipped.
    pub health: Arc<Health>,
}

impl Host {
    /// A host whose connections `manager` opens, at most `max_connections` at once.
    pub fn new(
        addr: String,
        build: impl FnOnce(OnConnect) -> LeaseManager,
        max_connections: usize,
    ) -> Self {
        let health = Arc::new(Health::default());
        let on_connect: OnConnect = {
            let health = health.clone();
            Arc::new(move |addr: &str| health.connected(addr))
        };
        Self {
            addr,
            pool: pool::build(build(on_connect), max_connections),
            health,
        }
    }

    /// A lease on this host, opening a connection if none has room.
    pub async fn lease(&self, max_backoff: Duration) -> Result<PooledLease, SshError> {
        let outcome = self.pool.get().await.map_err(|error| match error {
            PoolError::Backend(error) => error,
            other => SshError::Lost {
                addr: self.addr.clone(),
                cause: format!("the connection pool failed: {other}"),
            },
        });
        if let Err(error) = &outcome {
            self.health.failed(&self.addr, error, max_backoff);
        }
        outcome
    }
}

/// All hosts of the pool, and where the next job starts looking.
pub struct Hosts {
    /// The hosts, in configuration order.
    pub hosts: Vec<Host>,
    next: AtomicUsize,
    max_backoff: Duration,
}

impl Hosts {
    /// The hosts, skipping a failed host for at most `max_backoff`.
    pub fn new(hosts: Vec<Host>, max_backoff: Duration) -> Self {
        Self {
            hosts,
            next: AtomicUsize::new(0),
            max_backoff,
        }
    }

    /// A lease on the next host that is up; tries every host before giving up, and a host in
    /// back-off only when no other host could be tried.
    pub async fn lease(&self) -> Result<(usize, PooledLease), SshError> {
        let count = self.hosts.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let order: Vec<usize> = (0..count).map(|offset| (start + offset) % count).collect();
        let (up, down): (Vec<usize>, Vec<usize>) = order
            .into_iter()
            .partition(|&index| self.hosts[index].health.up(now));
        let mut errors = Vec::new();
        for index in &up {
            match self.hosts[*index].lease(self.max_backoff).await {
                Ok(lease) => return Ok((*index, lease)),
                Err(error) => errors.push(error),
            }
        }
        if up.is_empty()
            && let Some(index) = down
                .into_iter()
                .min_by_key(|&index| self.hosts[index].health.retry_at())
        {
            match self.hosts[index].lease(self.max_backoff).await {
                Ok(lease) => return Ok((index, lease)),
                Err(error) => errors.push(error),
            }
        }
        Err(combine(errors))
    }
}

/// One error for several hosts' failures: the first one's kind, every host's cause.
fn combine(mut errors: Vec<SshError>) -> SshError {
    if errors.len() <= 1 {
        return errors.pop().unwrap_or_else(|| SshError::Lost {
            addr: "(no host)".into(),
            cause: "no host is configured".into(),
        });
    }
    let first = errors.remove(0);
    let rest: Vec<String> = errors.iter().map(ToString::to_string).collect();
    match first {
        SshError::Unreachable { addr, cause } => SshError::Unreachable {
            addr,
            cause: format!("{cause}; other hosts: {}", rest.join("; ")),
        },
        other => {
            tracing::warn!("other hosts failed too: {}", rest.join("; "));
            other
        }
    }
}
