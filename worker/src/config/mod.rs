//! The worker's configuration: one validated struct.
//!
//! Sources, later ones winning: built-in defaults < TOML file (`--config` or
//! `OPENSHELL_CONFIG`) < environment variables (the OpenClaw names keep working, see
//! [`env`]) < command-line flags. Unknown keys in the file are errors. `openshell config`
//! prints the result with secrets redacted.

mod audit;
mod durable;
pub mod env;
mod error;
mod files;
pub mod limits;
mod network;
mod secret;
mod sessions;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openshell_protocol::subjects::{DEFAULT_PREFIX, check_token};
use openshell_protocol::{ByteSize, DurationMs, Limits};
use openshell_scheduler::{PoolPolicy, TenantFilter, TenantQuotas, WaitingLimits};
use serde::{Deserialize, Serialize};

pub use audit::AuditConfig;
pub use durable::DurableConfig;
pub use error::ConfigError;
pub use files::FilesConfig;
pub use network::NetworkConfig;
pub use secret::Secret;
pub use sessions::SessionSettings;

use openshell_backend::language::{self as languages, LanguageSpec};
use openshell_backend::{BackendKind, BackendMetrics, PoolContext};
use openshell_backend_docker::DockerSettings;
use openshell_backend_local::LocalSettings;
use openshell_backend_ssh::SshSettings;

/// Backend of the pool created when no file defines pools.
pub const DEFAULT_BACKEND: BackendKind = BackendKind::Docker;

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// NATS connection.
    pub nats: NatsConfig,
    /// This worker process.
    pub worker: WorkerConfig,
    /// Pools served, by name; each is one queue group bound to one backend.
    pub pools: BTreeMap<String, PoolConfig>,
    /// Durable mode (JetStream); off unless enabled.
    pub durable: DurableConfig,
    /// Files jobs return (a request's `outputs`).
    pub files: FilesConfig,
    /// The audit chain's signed checkpoints.
    pub audit: AuditConfig,
}

/// How to reach NATS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URLs, tried in turn (`NATS_URL`, comma-separated).
    pub urls: Vec<String>,
    /// User name (`NATS_USER`).
    pub user: Option<String>,
    /// Password (`NATS_PASSWORD`).
    pub password: Option<Secret>,
    /// Token (`NATS_TOKEN`).
    pub token: Option<Secret>,
    /// NKey seed (`NATS_NKEY`).
    pub nkey: Option<Secret>,
    /// Credentials file (`NATS_CREDS`).
    pub creds_file: Option<PathBuf>,
    /// CA certificate for TLS (`NATS_TLS_CA`).
    pub tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (`NATS_TLS_CERT`).
    pub tls_cert: Option<PathBuf>,
    /// Client key for mutual TLS (`NATS_TLS_KEY`).
    pub tls_key: Option<PathBuf>,
    /// Require TLS (`NATS_TLS_REQUIRED`).
    pub tls_required: bool,
    /// Subject prefix (`OPENSHELL_SUBJECT_PREFIX`).
    pub subject_prefix: String,
    /// Time allowed for each connection attempt.
    pub connect_timeout: DurationMs,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            urls: vec!["nats://127.0.0.1:4222".to_string()],
            user: None,
            password: None,
            token: None,
            nkey: None,
            creds_file: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_required: false,
            subject_prefix: DEFAULT_PREFIX.to_string(),
            connect_timeout: DurationMs::secs(5),
        }
    }
}

/// Settings of this worker process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Worker id in results and audit events (`OPENSHELL_WORKER_ID`; default host-pid).
    pub id: String,
    /// How long running jobs may finish after SIGTERM (`OPENSHELL_SHUTDOWN_GRACE`).
    pub shutdown_grace: DurationMs,
    /// Largest request accepted (at most 1m).
    pub max_request_bytes: ByteSize,
    /// Log filter (`LOG_LEVEL`, or `RUST_LOG` for full filter syntax).
    pub log_level: String,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`METRICS_ADDR`); port 0 picks one.
    pub metrics_addr: std::net::SocketAddr,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_string())
            .unwrap_or_else(|_| "worker".to_string());
        Self {
            id: format!("{host}-{}", std::process::id()),
            shutdown_grace: DurationMs::secs(30),
            max_request_bytes: ByteSize::mib(1),
            log_level: "info".to_string(),
            metrics_addr: std::net::SocketAddr::from(([0, 0, 0, 0], 9464)),
        }
    }
}

/// One pool: a queue group of workers bound to one backend with one policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Backend kind: `docker`, `ssh`, `none`, or the name of a backend registered with the
    /// worker.
    pub backend: BackendKind,
    /// Jobs this worker runs at once for the pool (`OPENSHELL_SLOTS`).
    pub slots: usize,
    /// Jobs one tenant may run at once in the pool on this worker, 0 for no quota
    /// (`OPENSHELL_TENANT_QUOTA`).
    pub tenant_quota: usize,
    /// Quotas of named tenants, overriding `tenant_quota` (0: no quota for that tenant).
    pub tenant_quotas: BTreeMap<String, usize>,
    /// Core requests this worker holds for the pool before they get a slot; more are refused
    /// as `overloaded` (`OPENSHELL_MAX_WAITING`).
    pub max_waiting: usize,
    /// Of those, how many one tenant may hold (`OPENSHELL_TENANT_MAX_WAITING`).
    pub tenant_max_waiting: usize,
    /// Tenants allowed, `["*"]` for all.
    pub tenants: TenantFilter,
    /// Whether explicit `command` jobs are allowed.
    pub allow_commands: bool,
    /// Whether jobs may ask for network access.
    pub allow_network: bool,
    /// Egress rules for jobs with network access, held by the worker's egress proxy.
    pub network: NetworkConfig,
    /// Accept limits the backend cannot enforce (reported as not enforced) instead of failing closed.
    pub allow_unenforced_limits: bool,
    /// Limits for requests that set none. Read from a file, limits left out come from the
    /// pool's own backend ([`PoolConfig::for_backend`]), not from the default pool's: a missing
    /// table is empty here and filled in by [`Config::from_file`].
    #[serde(default)]
    pub defaults: Limits,
    /// Highest limits a request may ask for; filled in like `defaults`.
    #[serde(default)]
    pub ceilings: Limits,
    /// Languages and how to run them; replaces the built-in table when given.
    pub languages: BTreeMap<String, LanguageSpec>,
    /// Settings of the `none` (local process) backend.
    pub local: LocalSettings,
    /// Settings of the `docker` backend.
    pub docker: DockerSettings,
    /// Settings of the `ssh` backend.
    pub ssh: SshSettings,
    /// Sessions on the pool (`[pools.NAME.sessions]`).
    pub sessions: SessionSettings,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self::for_backend(DEFAULT_BACKEND)
    }
}

fn default_slots() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from) * 4
}

impl PoolConfig {
    /// A pool on `backend` with the built-in defaults.
    pub fn for_backend(backend: BackendKind) -> Self {
        // Only containers get a CPU share by default (SANDBOX_DOCKER_CPUS): other backends
        // enforce one only with a cpu cgroup, and a default they cannot enforce would fail
        // every job closed.
        let docker = backend == BackendKind::Docker;
        Self {
            backend,
            slots: default_slots(),
            tenant_quota: 0,
            tenant_quotas: BTreeMap::new(),
            max_waiting: 1024,
            tenant_max_waiting: 256,
            tenants: TenantFilter::Any,
            allow_commands: true,
            allow_network: false,
            network: NetworkConfig::default(),
            allow_unenforced_limits: false,
            defaults: Limits {
                timeout: Some(DurationMs::secs(30)),
                memory: Some(ByteSize::mib(512)),
                processes: Some(256),
                open_files: Some(256),
                output: Some(ByteSize::kib(256)),
                disk: Some(ByteSize::mib(256)),
                cpus: docker.then_some(1.0),
                ..Limits::default()
            },
            ceilings: Limits {
                timeout: Some(DurationMs::secs(600)),
                cpu_time: Some(DurationMs::secs(600)),
                memory: Some(ByteSize::gib(4)),
                cpus: Some(4.0),
                processes: Some(4096),
                open_files: Some(4096),
                output: Some(ByteSize::kib(512)),
                disk: Some(ByteSize::gib(4)),
            },
            languages: languages::builtin(),
            local: LocalSettings::default(),
            docker: DockerSettings::default(),
            ssh: SshSettings::default(),
            sessions: SessionSettings::default(),
        }
    }

    /// The pool's tenant quotas.
    pub fn quotas(&self) -> TenantQuotas {
        TenantQuotas {
            tenants: self.tenant_quotas.clone(),
            ..TenantQuotas::uniform(self.tenant_quota)
        }
    }

    /// The bounds of the pool's waiting room.
    pub fn waiting_limits(&self) -> WaitingLimits {
        WaitingLimits {
            pool: self.max_waiting,
            tenant: self.tenant_max_waiting,
        }
    }

    /// What the backend of pool `name` knows of it, its metrics going to `metrics`.
    pub fn context(&self, name: &str, metrics: BackendMetrics) -> PoolContext {
        PoolContext {
            name: name.to_string(),
            defaults: self.defaults.clone(),
            slots: self.slots,
            languages: self.languages.clone(),
            metrics,
        }
    }

    /// The admission policy of pool `name`.
    pub fn policy(&self, name: &str) -> PoolPolicy {
        PoolPolicy {
            pool: name.to_string(),
            backend: self.backend.to_string(),
            defaults: self.defaults.clone(),
            ceilings: self.ceilings.clone(),
            tenants: self.tenants.clone(),
            languages: self.languages.keys().cloned().collect::<BTreeSet<_>>(),
            allow_commands: self.allow_commands,
            allow_network: self.allow_network,
            egress: self.network.allow.clone(),
            allow_unenforced_limits: self.allow_unenforced_limits,
        }
    }
}

/// Command-line overrides of `openshell worker`.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--nats`.
    pub nats_url: Option<String>,
    /// `--backend`.
    pub backend: Option<BackendKind>,
    /// `--slots`.
    pub slots: Option<usize>,
    /// `--worker-id`.
    pub worker_id: Option<String>,
}

impl Config {
    /// Loads the configuration from `file` (if any), the process environment and `flags`.
    pub fn load(file: Option<&Path>, flags: &Overrides) -> Result<Self, ConfigError> {
        Self::load_with(file, flags, |name| std::env::var(name).ok())
    }

    /// Like [`Config::load`], reading variables through `env` (for tests).
    pub fn load_with(
        file: Option<&Path>,
        flags: &Overrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| env(env::CONFIG).map(PathBuf::from));
        let mut config = match &file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        env::apply(&mut config, &env)?;
        config.apply_flags(flags);
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML file; unknown keys are errors. A pool's `defaults` and `ceilings` tables
    /// override the built-in ones of the pool's backend limit by limit rather than replacing
    /// them whole, so an `ssh` or `none` pool never inherits Docker's CPU share.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|error| ConfigError::File {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        for pool in config.pools.values_mut() {
            let builtin = PoolConfig::for_backend(pool.backend.clone());
            pool.defaults = pool.defaults.or(&builtin.defaults);
            pool.ceilings = pool.ceilings.or(&builtin.ceilings);
        }
        Ok(config)
    }

    fn apply_flags(&mut self, flags: &Overrides) {
        if let Some(url) = &flags.nats_url {
            self.nats.urls = env::split_list(url);
        }
        if let Some(backend) = &flags.backend {
            self.pools = BTreeMap::from([(
                backend.to_string(),
                PoolConfig::for_backend(backend.clone()),
            )]);
        }
        if let Some(slots) = flags.slots {
            self.pools.values_mut().for_each(|pool| pool.slots = slots);
        }
        if let Some(id) = &flags.worker_id {
            self.worker.id = id.clone();
        }
    }

    /// Checks every rule the types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid { key, reason };
        if self.nats.urls.is_empty() {
            return Err(invalid(
                "nats.urls".into(),
                "give at least one NATS URL".into(),
            ));
        }
        if self.worker.max_request_bytes > ByteSize::mib(1) {
            return Err(invalid(
                "worker.max_request_bytes".into(),
                "at most 1m".into(),
            ));
        }
        if self.audit.checkpoint_interval.millis() < 100 {
            return Err(invalid(
                "audit.checkpoint_interval".into(),
                "at least 100ms".into(),
            ));
        }
        if self.worker.id.len() > 256 {
            return Err(invalid(
                "worker.id".into(),
                "at most 256 bytes (it is in every audit event, whose room is reserved)".into(),
            ));
        }
        if ![1, 3, 5].contains(&self.durable.replicas) {
            return Err(invalid(
                "durable.replicas".into(),
                "must be 1, 3 or 5 (3 survives the loss of any one NATS node)".into(),
            ));
        }
        if !(1..=256).contains(&self.files.max_files) {
            return Err(invalid(
                "files.max_files".into(),
                "must be 1 to 256 (each returned file takes room in the finished audit event, \
                 which the request size limit leaves)"
                    .into(),
            ));
        }
        if self.files.inline_bytes > ByteSize::kib(512) {
            return Err(invalid(
                "files.inline_bytes".into(),
                "at most 512k, so that a result with its files fits in one NATS message".into(),
            ));
        }
        if self.durable.max_deliver == 0 {
            return Err(invalid(
                "durable.max_deliver".into(),
                "must be at least 1".into(),
            ));
        }
        if self.durable.ack_wait.millis() < 300 {
            return Err(invalid(
                "durable.ack_wait".into(),
                "at least 300ms, so in-progress acks can keep up".into(),
            ));
        }
        crate::logging::check_filter(&self.worker.log_level).map_err(|source| {
            ConfigError::LogFilter {
                setting: "worker.log_level",
                value: self.worker.log_level.clone(),
                source,
            }
        })?;
        if self.pools.is_empty() {
            return Err(invalid("pools".into(), "define at least one pool".into()));
        }
        for (name, pool) in &self.pools {
            let key = |field: &str| format!("pools.{name}.{field}");
            check_token("pool", name)
                .map_err(|error| invalid(format!("pools.{name}"), error.to_string()))?;
            pool.sessions.validate(name)?;
            if pool.slots == 0 {
                return Err(invalid(key("slots"), "must be at least 1".into()));
            }
            if pool.max_waiting == 0 || pool.tenant_max_waiting == 0 {
                return Err(invalid(
                    key("max_waiting"),
                    "max_waiting and tenant_max_waiting must be at least 1".into(),
                ));
            }
            if pool.tenant_max_waiting > pool.max_waiting {
                return Err(invalid(
                    key("tenant_max_waiting"),
                    format!(
                        "{} is above the pool's max_waiting {}: one tenant could fill the pool",
                        pool.tenant_max_waiting, pool.max_waiting
                    ),
                ));
            }
            for tenant in pool.tenant_quotas.keys() {
                check_token("tenant", tenant)
                    .map_err(|error| invalid(key("tenant_quotas"), error.to_string()))?;
            }
            if let Some((field, reason)) = pool.network.problem(pool.allow_network) {
                return Err(invalid(key(field), reason));
            }
            if pool.defaults.timeout.is_none() {
                return Err(invalid(
                    key("defaults.timeout"),
                    "every pool needs a default wall timeout".into(),
                ));
            }
            if pool.defaults.output.is_none() {
                return Err(invalid(
                    key("defaults.output"),
                    "every pool needs a default output limit".into(),
                ));
            }
            for (table, limits) in [("defaults", &pool.defaults), ("ceilings", &pool.ceilings)] {
                if let Some((limit, reason)) = limits::first_unusable(&pool.backend, limits) {
                    return Err(invalid(key(&format!("{table}.{limit}")), reason));
                }
            }
            for (limit, value) in pool.defaults.iter() {
                if let Some(ceiling) = pool.ceilings.get(limit)
                    && value > ceiling
                {
                    return Err(invalid(
                        key(&format!("defaults.{limit}")),
                        format!("default {value} is above the ceiling {ceiling}"),
                    ));
                }
            }
            if pool
                .ceilings
                .output
                .is_some_and(|output| output > ByteSize::kib(768))
            {
                return Err(invalid(
                    key("ceilings.output"),
                    "at most 768k, so a result fits in one NATS message".into(),
                ));
            }
        }
        Ok(())
    }

    /// The configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        // A password or token may also sit inside a server URL.
        shown.nats.urls = self
            .nats
            .urls
            .iter()
            .map(|url| Secret::redact_url(url))
            .collect();
        toml::to_string_pretty(&shown)
            .unwrap_or_else(|error| format!("# cannot print configuration: {error}\n"))
    }
}

#[cfg(test)]
mod tests;
