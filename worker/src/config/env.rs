//! Environment variables: the OpenClaw names plus NATS and OpenShell settings.
//!
//! | variable | sets |
//! |---|---|
//! | `SANDBOX_BACKEND` | backend of the default pool (named after it) when the file defines no pools |
//! | `SANDBOX_DOCKER_IMAGE` | image of every `docker` pool |
//! | `SANDBOX_DOCKER_MEMORY`, `SANDBOX_DOCKER_CPUS`, `SANDBOX_DOCKER_TIMEOUT` | default limits of every `docker` pool |
//! | `SSH_HOST` (comma-separated), `SSH_USER`, `SSH_KEY_PATH`, `SSH_PORT`, `SSH_KNOWN_HOSTS` | connection of every `ssh` pool |
//! | `SSH_TIMEOUT` | default wall timeout of every `ssh` pool (bare number = seconds) |
//! | `LOG_LEVEL` | `worker.log_level`: a level, or a filter whose every directive names one (`verbose` is refused) |
//! | `RUST_LOG` | `worker.log_level` too, winning over `LOG_LEVEL`; checked the same way |
//! | `NATS_URL` (comma-separated), `NATS_USER`, `NATS_PASSWORD`, `NATS_TOKEN`, `NATS_NKEY`, `NATS_CREDS`, `NATS_TLS_CA`, `NATS_TLS_CERT`, `NATS_TLS_KEY`, `NATS_TLS_REQUIRED` | `nats.*` |
//! | `OPENSHELL_CONFIG` | the TOML file |
//! | `OPENSHELL_SUBJECT_PREFIX`, `OPENSHELL_WORKER_ID`, `OPENSHELL_SLOTS`, `OPENSHELL_TENANT_QUOTA`, `OPENSHELL_SHUTDOWN_GRACE`, `OPENSHELL_MAX_REQUEST_BYTES` | subject prefix, worker id, slots and default tenant quota of every pool, shutdown grace, largest request |
//! | `OPENSHELL_MAX_WAITING`, `OPENSHELL_TENANT_MAX_WAITING` | requests every pool holds before they get a slot, in all and per tenant |
//! | `OPENSHELL_DURABLE`, `OPENSHELL_DURABLE_ACK_WAIT`, `OPENSHELL_DURABLE_MAX_DELIVER`, `OPENSHELL_DURABLE_REPLICAS`, `OPENSHELL_DURABLE_RESULTS_MAX_AGE` | `durable.*` (see `config::DurableConfig`) |
//! | `OPENSHELL_FILES_MAX_FILES`, `OPENSHELL_FILES_MAX_BYTES`, `OPENSHELL_FILES_TTL` | `files.*` (see `config::FilesConfig`) |
//! | `OPENSHELL_AUDIT_KEY`, `OPENSHELL_AUDIT_CHECKPOINT_INTERVAL` | `audit.key`, `audit.checkpoint_interval` |
//! | `OPENSHELL_AUDIT_MAX_AGE`, `OPENSHELL_AUDIT_MAX_BYTES` | `durable.audit_max_age`, `durable.audit_max_bytes`: retention of the audit stream |
//! | `METRICS_ADDR` | where `/metrics`, `/healthz`, `/readyz` listen (default 0.0.0.0:9464; port 0 picks one) |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use openshell_backend::{BackendKind, UnknownBackend};
use openshell_protocol::limits::LimitValue;
use openshell_protocol::{ByteSize, DurationMs, LimitName};

use super::{Config, ConfigError, DEFAULT_BACKEND, NatsConfig, PoolConfig, Secret, limits};

/// Path of the TOML configuration file.
pub const CONFIG: &str = "OPENSHELL_CONFIG";
/// Backend of the default pool.
pub const SANDBOX_BACKEND: &str = "SANDBOX_BACKEND";
/// Image of docker pools.
pub const SANDBOX_DOCKER_IMAGE: &str = "SANDBOX_DOCKER_IMAGE";
/// Default memory of docker pools (`512m`).
pub const SANDBOX_DOCKER_MEMORY: &str = "SANDBOX_DOCKER_MEMORY";
/// Default CPU share of docker pools (`1.0`).
pub const SANDBOX_DOCKER_CPUS: &str = "SANDBOX_DOCKER_CPUS";
/// Default wall timeout of docker pools (`30s`; a bare number is seconds).
pub const SANDBOX_DOCKER_TIMEOUT: &str = "SANDBOX_DOCKER_TIMEOUT";
/// Hosts of ssh pools, comma-separated.
pub const SSH_HOST: &str = "SSH_HOST";
/// Remote user of ssh pools.
pub const SSH_USER: &str = "SSH_USER";
/// Private key of ssh pools.
pub const SSH_KEY_PATH: &str = "SSH_KEY_PATH";
/// Port of ssh pools.
pub const SSH_PORT: &str = "SSH_PORT";
/// known_hosts file of ssh pools.
pub const SSH_KNOWN_HOSTS: &str = "SSH_KNOWN_HOSTS";
/// Default wall timeout of ssh pools (`30`; a bare number is seconds).
pub const SSH_TIMEOUT: &str = "SSH_TIMEOUT";
/// Log filter.
pub const LOG_LEVEL: &str = "LOG_LEVEL";
/// Log filter in full syntax; wins over [`LOG_LEVEL`].
pub const RUST_LOG: &str = "RUST_LOG";
/// NATS server URLs, comma-separated.
pub const NATS_URL: &str = "NATS_URL";
/// Subject prefix.
pub const SUBJECT_PREFIX: &str = "OPENSHELL_SUBJECT_PREFIX";
/// Worker id.
pub const WORKER_ID: &str = "OPENSHELL_WORKER_ID";
/// The audit signing key (PKCS#8 PEM file).
pub const AUDIT_KEY: &str = "OPENSHELL_AUDIT_KEY";
/// How often a signed audit checkpoint is published.
pub const AUDIT_CHECKPOINT_INTERVAL: &str = "OPENSHELL_AUDIT_CHECKPOINT_INTERVAL";
/// Audit events older than this are removed from the audit stream.
pub const AUDIT_MAX_AGE: &str = "OPENSHELL_AUDIT_MAX_AGE";
/// The audit stream's size bound (oldest removed first).
pub const AUDIT_MAX_BYTES: &str = "OPENSHELL_AUDIT_MAX_BYTES";
/// Slots of every pool.
pub const SLOTS: &str = "OPENSHELL_SLOTS";
/// Jobs one tenant may run at once per pool per worker (0: no quota).
pub const TENANT_QUOTA: &str = "OPENSHELL_TENANT_QUOTA";
/// Requests a pool holds before they get a slot.
pub const MAX_WAITING: &str = "OPENSHELL_MAX_WAITING";
/// Of those, how many of one tenant.
pub const TENANT_MAX_WAITING: &str = "OPENSHELL_TENANT_MAX_WAITING";
/// Shutdown grace period.
pub const SHUTDOWN_GRACE: &str = "OPENSHELL_SHUTDOWN_GRACE";
/// Metrics listen address.
pub const METRICS_ADDR: &str = "METRICS_ADDR";
/// Largest request accepted.
pub const MAX_REQUEST_BYTES: &str = "OPENSHELL_MAX_REQUEST_BYTES";

/// Durable mode on or off.
pub const DURABLE: &str = "OPENSHELL_DURABLE";
/// Durable consumer ack wait.
pub const DURABLE_ACK_WAIT: &str = "OPENSHELL_DURABLE_ACK_WAIT";
/// Deliveries of a durable job that may run it.
pub const DURABLE_MAX_DELIVER: &str = "OPENSHELL_DURABLE_MAX_DELIVER";
/// `durable.replicas`.
pub const DURABLE_REPLICAS: &str = "OPENSHELL_DURABLE_REPLICAS";
/// `files.max_files`.
pub const FILES_MAX_FILES: &str = "OPENSHELL_FILES_MAX_FILES";
/// `files.max_bytes`.
pub const FILES_MAX_BYTES: &str = "OPENSHELL_FILES_MAX_BYTES";
/// `files.ttl`.
pub const FILES_TTL: &str = "OPENSHELL_FILES_TTL";
/// Results-stream max age.
pub const DURABLE_RESULTS_MAX_AGE: &str = "OPENSHELL_DURABLE_RESULTS_MAX_AGE";
/// Splits a comma-separated list, dropping empty entries.
pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse<T: FromStr>(var: &'static str, value: &str, expected: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|error: T::Err| ConfigError::Env {
            var,
            value: value.to_string(),
            reason: format!("{error}; expected {expected}"),
        })
}

/// Refuses a default limit of `backend` set by `var` that can never let a job run (a zero
/// timeout, a memory below what the backend accepts).
fn usable<T>(
    var: &'static str,
    value: &str,
    backend: &BackendKind,
    limit: LimitName,
    parsed: T,
    as_value: impl Fn(T) -> LimitValue,
) -> Result<T, ConfigError>
where
    T: Copy,
{
    match limits::unusable(backend, limit, as_value(parsed)) {
        None => Ok(parsed),
        Some(reason) => Err(ConfigError::Env {
            var,
            value: value.to_string(),
            reason,
        }),
    }
}

fn log_filter(var: &'static str, value: String) -> Result<String, ConfigError> {
    match crate::logging::check_filter(&value) {
        Ok(()) => Ok(value),
        Err(source) => Err(ConfigError::LogFilter {
            setting: var,
            value,
            source,
        }),
    }
}

fn duration(var: &'static str, value: &str) -> Result<DurationMs, ConfigError> {
    DurationMs::parse_seconds_default(value).map_err(|error| ConfigError::Env {
        var,
        value: value.to_string(),
        reason: error.to_string(),
    })
}

/// Applies the environment to `config`, read through `env`.
pub fn apply(
    config: &mut Config,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    apply_pools(config, env)?;
    apply_nats(config, env)?;
    apply_durable(config, env)?;
    apply_files(config, env)?;
    if let Some(level) = env(LOG_LEVEL) {
        config.worker.log_level = log_filter(LOG_LEVEL, level)?;
    }
    if let Some(filter) = env(RUST_LOG) {
        config.worker.log_level = log_filter(RUST_LOG, filter)?;
    }
    if let Some(id) = env(WORKER_ID) {
        config.worker.id = id;
    }
    if let Some(grace) = env(SHUTDOWN_GRACE) {
        config.worker.shutdown_grace = duration(SHUTDOWN_GRACE, &grace)?;
    }
    if let Some(addr) = env(METRICS_ADDR) {
        config.worker.metrics_addr = parse(METRICS_ADDR, &addr, "an address such as 0.0.0.0:9464")?;
    }
    if let Some(size) = env(MAX_REQUEST_BYTES) {
        config.worker.max_request_bytes = parse(MAX_REQUEST_BYTES, &size, "a size such as 1m")?;
    }
    if let Some(path) = env(AUDIT_KEY) {
        config.audit.key = Some(PathBuf::from(path));
    }
    if let Some(interval) = env(AUDIT_CHECKPOINT_INTERVAL) {
        config.audit.checkpoint_interval = duration(AUDIT_CHECKPOINT_INTERVAL, &interval)?;
    }
    if let Some(age) = env(AUDIT_MAX_AGE) {
        config.durable.audit_max_age = duration(AUDIT_MAX_AGE, &age)?;
    }
    if let Some(size) = env(AUDIT_MAX_BYTES) {
        config.durable.audit_max_bytes = parse(AUDIT_MAX_BYTES, &size, "a size such as 1g")?;
    }
    Ok(())
}

fn apply_pools(
    config: &mut Config,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match env(SANDBOX_BACKEND) {
        Some(backend) if !config.pools.is_empty() => {
            return Err(ConfigError::Env {
                var: SANDBOX_BACKEND,
                value: backend,
                reason: "the config file defines pools, so it is ambiguous; unset it or remove [pools] from the file".into(),
            });
        }
        Some(value) => {
            let backend: BackendKind =
                value
                    .trim()
                    .parse()
                    .map_err(|error: UnknownBackend| ConfigError::Env {
                        var: SANDBOX_BACKEND,
                        value: value.clone(),
                        reason: error.to_string(),
                    })?;
            config.pools =
                BTreeMap::from([(backend.to_string(), PoolConfig::for_backend(backend))]);
        }
        None if config.pools.is_empty() => {
            config.pools = BTreeMap::from([(
                DEFAULT_BACKEND.to_string(),
                PoolConfig::for_backend(DEFAULT_BACKEND),
            )]);
        }
        None => {}
    }
    let docker_memory = env(SANDBOX_DOCKER_MEMORY)
        .map(|value| {
            let size = parse::<ByteSize>(SANDBOX_DOCKER_MEMORY, &value, "a size such as 512m")?;
            let var = SANDBOX_DOCKER_MEMORY;
            usable(
                var,
                &value,
                &BackendKind::Docker,
                LimitName::Memory,
                size,
                LimitValue::Size,
            )
        })
        .transpose()?;
    let docker_cpus = env(SANDBOX_DOCKER_CPUS)
        .map(|value| {
            let cores = parse::<f64>(SANDBOX_DOCKER_CPUS, &value, "a number of cores such as 1.0")?;
            let var = SANDBOX_DOCKER_CPUS;
            usable(
                var,
                &value,
                &BackendKind::Docker,
                LimitName::Cpus,
                cores,
                LimitValue::Cores,
            )
        })
        .transpose()?;
    let timeout = |var: &'static str, backend: &BackendKind| {
        env(var)
            .map(|value| {
                let wall = duration(var, &value)?;
                usable(
                    var,
                    &value,
                    backend,
                    LimitName::Timeout,
                    wall,
                    LimitValue::Duration,
                )
            })
            .transpose()
    };
    let docker_timeout = timeout(SANDBOX_DOCKER_TIMEOUT, &BackendKind::Docker)?;
    let ssh_timeout = timeout(SSH_TIMEOUT, &BackendKind::Ssh)?;
    let ssh_port = env(SSH_PORT)
        .map(|value| parse::<u16>(SSH_PORT, &value, "a TCP port such as 22"))
        .transpose()?;
    let slots = env(SLOTS)
        .map(|value| parse::<usize>(SLOTS, &value, "a whole number of jobs, at least 1"))
        .transpose()?;
    let tenant_quota = env(TENANT_QUOTA)
        .map(|value| parse::<usize>(TENANT_QUOTA, &value, "a whole number of jobs, 0 for none"))
        .transpose()?;
    let max_waiting = env(MAX_WAITING)
        .map(|value| {
            parse::<usize>(
                MAX_WAITING,
                &value,
                "a whole number of requests, at least 1",
            )
        })
        .transpose()?;
    let tenant_max_waiting = env(TENANT_MAX_WAITING)
        .map(|value| {
            parse::<usize>(
                TENANT_MAX_WAITING,
                &value,
                "a whole number of requests, at least 1",
            )
        })
        .transpose()?;
    for pool in config.pools.values_mut() {
        match pool.backend {
            BackendKind::Docker => {
                pool.docker.image = env(SANDBOX_DOCKER_IMAGE).unwrap_or(pool.docker.image.clone());
                pool.defaults.memory = docker_memory.or(pool.defaults.memory);
                pool.defaults.cpus = docker_cpus.or(pool.defaults.cpus);
                pool.defaults.timeout = docker_timeout.or(pool.defaults.timeout);
            }
            BackendKind::Ssh => {
                let ssh = &mut pool.ssh;
                ssh.hosts = env(SSH_HOST)
                    .map(|hosts| split_list(&hosts))
                    .unwrap_or(ssh.hosts.clone());
                ssh.user = env(SSH_USER).unwrap_or(ssh.user.clone());
                ssh.key_path = env(SSH_KEY_PATH).map(PathBuf::from).or(ssh.key_path.take());
                ssh.port = ssh_port.unwrap_or(ssh.port);
                ssh.known_hosts = env(SSH_KNOWN_HOSTS)
                    .map(PathBuf::from)
                    .or(ssh.known_hosts.take());
                pool.defaults.timeout = ssh_timeout.or(pool.defaults.timeout);
            }
            _ => {}
        }
        pool.slots = slots.unwrap_or(pool.slots);
        pool.tenant_quota = tenant_quota.unwrap_or(pool.tenant_quota);
        pool.max_waiting = max_waiting.unwrap_or(pool.max_waiting);
        pool.tenant_max_waiting = tenant_max_waiting.unwrap_or(pool.tenant_max_waiting);
    }
    Ok(())
}

/// The NATS settings alone, for the client commands: defaults < the `[nats]` table of the file
/// named by `OPENSHELL_CONFIG` < the `NATS_*` variables. The worker's other settings are not
/// read, so a client does not fail on them; a bad NATS setting is an error naming it.
pub fn load_nats(env: impl Fn(&str) -> Option<String>) -> Result<NatsConfig, ConfigError> {
    let mut config = match env(CONFIG) {
        Some(path) => Config::from_file(Path::new(&path))?,
        None => Config::default(),
    };
    apply_nats(&mut config, &env)?;
    Ok(config.nats)
}

fn apply_nats(
    config: &mut Config,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let nats = &mut config.nats;
    if let Some(urls) = env(NATS_URL) {
        nats.urls = split_list(&urls);
    }
    if let Some(prefix) = env(SUBJECT_PREFIX) {
        nats.subject_prefix = prefix;
    }
    nats.user = env("NATS_USER").or(nats.user.take());
    nats.password = env("NATS_PASSWORD")
        .map(Secret::new)
        .or(nats.password.take());
    nats.token = env("NATS_TOKEN").map(Secret::new).or(nats.token.take());
    nats.nkey = env("NATS_NKEY").map(Secret::new).or(nats.nkey.take());
    nats.creds_file = env("NATS_CREDS")
        .map(PathBuf::from)
        .or(nats.creds_file.take());
    nats.tls_ca = env("NATS_TLS_CA").map(PathBuf::from).or(nats.tls_ca.take());
    nats.tls_cert = env("NATS_TLS_CERT")
        .map(PathBuf::from)
        .or(nats.tls_cert.take());
    nats.tls_key = env("NATS_TLS_KEY")
        .map(PathBuf::from)
        .or(nats.tls_key.take());
    if let Some(required) = env("NATS_TLS_REQUIRED") {
        nats.tls_required = parse("NATS_TLS_REQUIRED", &required, "true or false")?;
    }
    Ok(())
}

fn apply_durable(
    config: &mut Config,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let durable = &mut config.durable;
    if let Some(value) = env(DURABLE) {
        durable.enabled = parse(DURABLE, &value, "true or false")?;
    }
    if let Some(value) = env(DURABLE_ACK_WAIT) {
        durable.ack_wait = duration(DURABLE_ACK_WAIT, &value)?;
    }
    if let Some(value) = env(DURABLE_MAX_DELIVER) {
        durable.max_deliver = parse(DURABLE_MAX_DELIVER, &value, "a whole number, at least 1")?;
    }
    if let Some(value) = env(DURABLE_REPLICAS) {
        durable.replicas = parse(DURABLE_REPLICAS, &value, "1, 3 or 5")?;
    }
    if let Some(value) = env(DURABLE_RESULTS_MAX_AGE) {
        durable.results_max_age = duration(DURABLE_RESULTS_MAX_AGE, &value)?;
    }
    Ok(())
}

fn apply_files(
    config: &mut Config,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let files = &mut config.files;
    if let Some(value) = env(FILES_MAX_FILES) {
        files.max_files = parse(FILES_MAX_FILES, &value, "a whole number, at least 1")?;
    }
    if let Some(value) = env(FILES_MAX_BYTES) {
        files.max_bytes = parse(FILES_MAX_BYTES, &value, "a size such as 32m")?;
    }
    if let Some(value) = env(FILES_TTL) {
        files.ttl = duration(FILES_TTL, &value)?;
    }
    Ok(())
}
