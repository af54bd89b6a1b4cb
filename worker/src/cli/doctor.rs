//! `openshell doctor`: checks what a worker needs — configuration, the audit signing key, NATS,
//! each pool's backend, the clock — and prints what to fix. Exits non-zero when a check fails.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::config::{Config, Overrides};
use crate::registry::BackendRegistry;
use openshell_backend::BackendMetrics;

/// How long one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// A wall clock before this (2025-01-01T00:00:00Z) is surely wrong.
const EARLIEST_SANE_UNIX_TIME: i64 = 1_735_689_600;

/// Check this host's worker setup and print what to fix.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  openshell doctor\n  SANDBOX_BACKEND=docker openshell doctor --config /etc/openshell/worker.toml"
)]
pub struct DoctorArgs {
    /// TOML configuration file (env OPENSHELL_CONFIG).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It passed.
    Ok,
    /// Worth a look, not fatal.
    Warn,
    /// The worker will not work until this is fixed.
    Fail,
}

/// One check's finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How it ended.
    pub status: Status,
    /// What was checked.
    pub subject: String,
    /// What was found, and for a problem, what to do.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            Status::Ok => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        write!(f, "{tag}  {:<18} {}", self.subject, self.detail)
    }
}

fn finding(status: Status, subject: impl Into<String>, detail: impl Into<String>) -> Finding {
    Finding {
        status,
        subject: subject.into(),
        detail: detail.into(),
    }
}

/// Runs every check, prints each finding, and fails when any check failed.
pub async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut findings = vec![check_clock()];
    match Config::load(args.config.as_deref(), &Overrides::default()) {
        Ok(config) => {
            findings.push(finding(
                Status::Ok,
                "config",
                format!(
                    "{} pool(s), worker id {}",
                    config.pools.len(),
                    config.worker.id
                ),
            ));
            findings.push(check_audit_key(&config));
            findings.push(check_nats(&config).await);
            for (name, pool) in &config.pools {
                findings.push(check_pool(name, pool).await);
            }
        }
        Err(error) => findings.push(finding(Status::Fail, "config", error.to_string())),
    }
    for finding in &findings {
        println!("{finding}");
    }
    let failed = findings.iter().filter(|f| f.status == Status::Fail).count();
    if failed == 0 {
        println!("all checks passed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{failed} check(s) failed: fix them and run `openshell doctor` again");
        Ok(ExitCode::FAILURE)
    }
}

/// The audit signing key: readable (or the worker will not start), and set at all (or no
/// auditor can trust its checkpoints).
pub fn check_audit_key(config: &Config) -> Finding {
    match &config.audit.key {
        None => finding(
            Status::Warn,
            "audit key",
            "OPENSHELL_AUDIT_KEY is not set: the worker signs its audit checkpoints with a key made at start, which no auditor can trust; set it (deploy/setup.sh makes audit-key.pem in its state directory)",
        ),
        Some(path) => match crate::audit::AuditKey::load(path) {
            Ok(key) => finding(
                Status::Ok,
                "audit key",
                format!(
                    "{} signs audit checkpoints; public key {} (give auditors its .pub.pem)",
                    path.display(),
                    key.public_hex()
                ),
            ),
            Err(error) => finding(Status::Fail, "audit key", error.to_string()),
        },
    }
}

/// The wall clock: sane, and synchronised where `timedatectl` can tell.
pub fn check_clock() -> Finding {
    let now = chrono::Utc::now();
    if now.timestamp() < EARLIEST_SANE_UNIX_TIME {
        return finding(
            Status::Fail,
            "clock",
            format!(
                "the wall clock says {now}; deadlines and audit times are wrong: set the time (enable NTP: timedatectl set-ntp true)"
            ),
        );
    }
    let synced = std::process::Command::new("timedatectl")
        .args(["show", "--property=NTPSynchronized", "--value"])
        .output();
    match synced {
        Ok(out) if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "yes" => {
            finding(Status::Ok, "clock", format!("{now}, NTP synchronised"))
        }
        Ok(out) if out.status.success() => finding(
            Status::Warn,
            "clock",
            format!(
                "{now}, not NTP synchronised: request deadlines compare clocks across hosts; enable NTP (timedatectl set-ntp true)"
            ),
        ),
        _ => finding(
            Status::Ok,
            "clock",
            format!("{now} (synchronisation unknown: no timedatectl; keep the host on NTP)"),
        ),
    }
}

/// NATS: the configured servers answer with these credentials.
pub async fn check_nats(config: &Config) -> Finding {
    let urls = crate::config::Secret::redact_urls(&config.nats.urls);
    let connect = crate::nats::connect_once(&config.nats, "openshell-doctor", None);
    match tokio::time::timeout(CHECK_TIMEOUT, connect).await {
        Ok(Ok(client)) => {
            let info = client.server_info();
            finding(
                Status::Ok,
                "nats",
                format!(
                    "connected to {urls} (nats-server {}, max payload {} bytes, JetStream {})",
                    info.version,
                    info.max_payload,
                    if info.jetstream { "on" } else { "off" }
                ),
            )
        }
        Ok(Err(error)) => finding(
            Status::Fail,
            "nats",
            format!(
                "{:#}; start nats-server (deploy/setup.sh) or set NATS_URL and the NATS_* credentials",
                anyhow::Error::from(error)
            ),
        ),
        Err(_) => finding(
            Status::Fail,
            "nats",
            format!(
                "no answer from {urls} within {}s; check the address, firewall and TLS settings",
                CHECK_TIMEOUT.as_secs()
            ),
        ),
    }
}

/// A pool: its backend builds, passes its health check, and runs the pool's canary job (a
/// `true` under the pool's own defaults), as a worker's readiness requires.
pub async fn check_pool(name: &str, pool: &crate::config::PoolConfig) -> Finding {
    let subject = format!("pool {name}");
    let context = pool.context(name, BackendMetrics::none(name));
    let backend = match BackendRegistry::new().build(pool, context).await {
        Ok(backend) => backend,
        Err(error) => return finding(Status::Fail, subject, error.to_string()),
    };
    match tokio::time::timeout(CHECK_TIMEOUT, backend.health()).await {
        Ok(Ok(())) => {
            let capabilities = backend.capabilities();
            let policy = pool.policy(name);
            match crate::job::canary::run(backend.as_ref(), &policy, &capabilities).await {
                Ok(()) => finding(
                    Status::Ok,
                    subject,
                    format!(
                        "{} backend healthy; a canary job ran under the pool's defaults",
                        backend.kind()
                    ),
                ),
                Err(error) => finding(Status::Fail, subject, error),
            }
        }
        Ok(Err(error)) => finding(Status::Fail, subject, error.to_string()),
        Err(_) => finding(
            Status::Fail,
            subject,
            format!(
                "{} backend health check gave no answer within {}s; check that its daemon or host is up",
                backend.kind(),
                CHECK_TIMEOUT.as_secs()
            ),
        ),
    }
}
