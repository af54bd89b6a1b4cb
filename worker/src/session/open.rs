//! Opening a session: check, reserve a place under the tenant's cap, create the sandbox,
//! audit `session_opened` (flushed before the answer), answer where to send jobs.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use openshell_protocol::session::{SessionOpen, SessionOpened};
use openshell_protocol::subjects::check_token;
use openshell_protocol::{
    AuditEvent, AuditEventType, DurationMs, ErrorInfo, ErrorKind, LimitName, Limits,
    PROTOCOL_VERSION,
};
use rand_core::{OsRng, RngCore};

use super::audit::SessionAudit;
use super::held::{Held, SessionRunner};
use super::{Session, Sessions};
use crate::job::PoolRuntime;
use openshell_backend::SessionSpec;

/// The limits that bound a whole session sandbox.
const SANDBOX_LIMITS: [LimitName; 4] = [
    LimitName::Memory,
    LimitName::Processes,
    LimitName::Disk,
    LimitName::Cpus,
];

/// Frees a reserved place under the tenant's cap when dropped.
struct Reservation<'a> {
    sessions: &'a Sessions,
    key: (String, String),
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut table = self.sessions.table();
        if let Some(count) = table.opening.get_mut(&self.key) {
            *count = count.saturating_sub(1);
        }
    }
}

impl Sessions {
    /// Opens a session on `pool` for `tenant` from the raw `payload`.
    pub(super) async fn open(
        self: &Arc<Self>,
        pool: &str,
        tenant: &str,
        payload: &[u8],
    ) -> Result<SessionOpened, ErrorInfo> {
        let invalid = |message: String| ErrorInfo::new(ErrorKind::InvalidRequest, message);
        check_token("tenant", tenant).map_err(|error| invalid(error.to_string()))?;
        let runtime = self
            .pools
            .get(pool)
            .ok_or_else(|| invalid(format!("pool `{pool}` is not served by this worker")))?;
        let request: SessionOpen = if payload.iter().all(u8::is_ascii_whitespace) {
            SessionOpen::default()
        } else {
            serde_json::from_slice(payload)
                .map_err(|error| invalid(format!("not a valid SessionOpen: {error}")))?
        };
        if request.version != PROTOCOL_VERSION {
            return Err(ErrorInfo::new(
                ErrorKind::UnsupportedVersion,
                format!("version {} is not spoken here: use 1", request.version),
            ));
        }
        let config = runtime.config();
        let settings = &config.sessions;
        if !config.tenants.allows(tenant) {
            return Err(ErrorInfo::new(
                ErrorKind::TenantNotAllowed,
                format!("tenant `{tenant}` may not use pool `{pool}`"),
            ));
        }
        let backend = Arc::clone(runtime.backend());
        if !settings.enabled || backend.sessions().is_none() {
            return Err(ErrorInfo::new(
                ErrorKind::SessionsUnsupported,
                format!(
                    "pool `{pool}` (backend `{}`) does not hold sessions: use plain jobs, or a pool whose backend does (docker, ssh, or none with its bubblewrap sandbox)",
                    backend.kind()
                ),
            ));
        }
        let ttl = request.ttl.unwrap_or(settings.ttl);
        if ttl > settings.max_ttl || ttl.millis() == 0 {
            return Err(ErrorInfo::new(
                ErrorKind::LimitExceedsPolicy,
                format!(
                    "ttl {ttl} is not within pool `{pool}`'s sessions: give 1ms to {}",
                    settings.max_ttl
                ),
            ));
        }
        let idle = request.idle.unwrap_or(settings.idle).min(ttl);
        if idle.millis() == 0 {
            return Err(invalid("idle must be longer than 0".to_string()));
        }
        let limits = sandbox_limits(&request.limits, runtime)?;
        let reservation = self.reserve(pool, tenant, settings.max_per_tenant)?;
        let id = new_id();
        let held = backend
            .sessions()
            .ok_or_else(|| ErrorInfo::new(ErrorKind::Internal, "sessions went away"))?
            .open(SessionSpec {
                id: id.clone(),
                tenant: tenant.to_string(),
                limits: limits.clone(),
            })
            .await
            .map_err(|error| error.to_info())?;
        let code_file = request
            .kernel
            .and_then(|kernel| config.languages.get(kernel.language()))
            .map_or_else(
                || "main.py".to_string(),
                |spec| spec.file.as_str().to_string(),
            );
        let held = Arc::new(Held {
            sandbox: held,
            kernel: request.kernel,
            code_file,
            restarts: AtomicU64::new(0),
            restarted: AtomicBool::new(false),
            lost: AtomicBool::new(false),
        });
        let context = self.context(tenant, pool, backend.kind());
        let opened_event =
            AuditEvent::for_session(AuditEventType::SessionOpened, &id, &limits, &context);
        if let Err(error) = self.audit.publish_flushed(&opened_event).await {
            let _ = held.sandbox.close().await;
            return Err(ErrorInfo::new(
                ErrorKind::Internal,
                format!("the session could not be audited, so it was not opened: {error}"),
            ));
        }
        let session_runtime = runtime
            .with_backend(Arc::new(SessionRunner {
                pool_backend: backend,
                held: Arc::clone(&held),
            }))
            .with_audit(Arc::new(SessionAudit {
                inner: Arc::clone(&self.audit),
                session: id.clone(),
            }));
        let now = Instant::now();
        let session = Arc::new(Session {
            id: id.clone(),
            tenant: tenant.to_string(),
            pool: pool.to_string(),
            held,
            runtime: session_runtime,
            limits: limits.clone(),
            opened: now,
            expires: now + ttl.as_duration(),
            idle: idle.as_duration(),
            last_used: Mutex::new(now),
            turn: tokio::sync::Mutex::new(()),
            jobs: AtomicU64::new(0),
        });
        {
            let mut table = self.table();
            table
                .sessions
                .insert((tenant.to_string(), id.clone()), session);
        }
        drop(reservation);
        self.metrics.sessions.opened(pool, tenant);
        tracing::info!(session = %id, %tenant, %pool, ttl = %ttl, idle = %idle, "session opened");
        Ok(SessionOpened {
            version: PROTOCOL_VERSION,
            subject: self.subjects.session_run(&self.token, tenant, &id),
            close_subject: self.subjects.session_close(&self.token, tenant, &id),
            session: id,
            worker_id: self.worker_id.clone(),
            pool: pool.to_string(),
            tenant: tenant.to_string(),
            expires_at: Utc::now()
                + chrono::Duration::from_std(ttl.as_duration()).unwrap_or_default(),
            idle,
            kernel: request.kernel,
            limits,
        })
    }

    /// A place under `tenant`'s cap of `max` sessions on `pool`, or `session_limit`.
    fn reserve(&self, pool: &str, tenant: &str, max: usize) -> Result<Reservation<'_>, ErrorInfo> {
        let key = (pool.to_string(), tenant.to_string());
        let mut table = self.table();
        let open = table
            .sessions
            .values()
            .filter(|session| session.pool == pool && session.tenant == tenant)
            .count();
        let opening = table.opening.entry(key.clone()).or_default();
        if open + *opening >= max {
            return Err(ErrorInfo::new(
                ErrorKind::SessionLimit,
                format!(
                    "tenant `{tenant}` has {max} session(s) open on pool `{pool}` on this worker, its cap: close one first"
                ),
            ));
        }
        *opening += 1;
        Ok(Reservation {
            sessions: self,
            key,
        })
    }
}

/// The session's sandbox-wide limits: asked, else the pool's defaults, within its ceilings
/// and what its backend can enforce. Per-job limits (timeout, output) stay per job.
fn sandbox_limits(asked: &Limits, runtime: &PoolRuntime) -> Result<Limits, ErrorInfo> {
    let config = runtime.config();
    let defaults = &config.defaults;
    let limits = Limits {
        memory: asked.memory.or(defaults.memory),
        processes: asked.processes.or(defaults.processes),
        disk: asked.disk.or(defaults.disk),
        cpus: asked.cpus.or(defaults.cpus),
        ..Limits::default()
    };
    let capabilities = runtime.backend().capabilities();
    for name in SANDBOX_LIMITS {
        let Some(value) = limits.get(name) else {
            continue;
        };
        if let Some(ceiling) = config.ceilings.get(name)
            && value > ceiling
        {
            return Err(ErrorInfo::new(
                ErrorKind::LimitExceedsPolicy,
                format!("{name} {value} is above the pool's ceiling of {ceiling}"),
            ));
        }
        if !capabilities.contains_key(&name) && !config.allow_unenforced_limits {
            return Err(ErrorInfo::new(
                ErrorKind::LimitNotEnforceable,
                format!("the pool's backend cannot enforce {name} on a session sandbox"),
            ));
        }
    }
    let unsupported = [
        (asked.timeout.is_some(), "timeout"),
        (asked.cpu_time.is_some(), "cpu_time"),
        (asked.output.is_some(), "output"),
        (asked.open_files.is_some(), "open_files"),
    ];
    if let Some((_, name)) = unsupported.iter().find(|(set, _)| *set) {
        return Err(ErrorInfo::new(
            ErrorKind::InvalidRequest,
            format!(
                "`{name}` is a limit of each job, not of a session: set it on the session's jobs"
            ),
        ));
    }
    Ok(limits)
}

/// A random session id: 24 hex digits.
fn new_id() -> String {
    let mut bytes = [0u8; 12];
    OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("s-{hex}")
}

/// How long until `session` should end, for the expiry check.
pub(super) fn remaining(
    now: Instant,
    expires: Instant,
    idle_since: Instant,
    idle: Duration,
) -> Duration {
    let by_ttl = expires.saturating_duration_since(now);
    let by_idle = (idle_since + idle).saturating_duration_since(now);
    by_ttl.min(by_idle)
}

#[allow(dead_code)]
fn _assert_duration(_: DurationMs) {}
