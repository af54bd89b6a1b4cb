//! The `[pools.NAME.docker]` section.

use std::collections::BTreeMap;

use openshell_protocol::{ByteSize, DurationMs};
use serde::{Deserialize, Serialize};

/// Default sandbox image (built by `deploy/sandbox-image`).
pub const DEFAULT_IMAGE: &str = "openshell-sandbox:latest";

/// How the Docker backend runs jobs.
///
/// Hardening (network `none` unless the pool grants network, read-only root filesystem,
/// `cap_drop ALL`, `no-new-privileges`, an init process, no mounts but the two tmpfs) is not
/// configurable: only what an operator legitimately tunes is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerSettings {
    /// Image for jobs whose language names none (`SANDBOX_DOCKER_IMAGE`).
    pub image: String,
    /// Pre-started containers kept ready per image at least (0 turns the warm pool off); more,
    /// up to the pool's slots, while jobs arrive faster than one refill takes.
    pub warm_pool: usize,
    /// Docker endpoint (`unix:///var/run/docker.sock`, `tcp://127.0.0.1:2375`); `DOCKER_HOST`
    /// when unset, else the local socket.
    pub endpoint: Option<String>,
    /// Numeric `uid:gid` jobs run as; never root. The image's `sandbox` user is 1000:1000.
    pub user: String,
    /// Working directory of jobs: a tmpfs owned by `user`, where the request's files land.
    pub workdir: String,
    /// Size of the working directory and `/tmp` tmpfs for jobs that set no disk limit.
    pub tmpfs_size: ByteSize,
    /// Pids limit of containers whose job sets no `processes` limit (hardening, not reported).
    pub max_processes: u64,
    /// Hard RLIMIT_NOFILE of every container; a job's `open_files` limit lowers it, and a job
    /// asking for more fails. It must not exceed dockerd's own hard limit.
    pub max_open_files: u64,
    /// PATH given to jobs.
    pub path: String,
    /// Docker network of jobs in pools that grant network access (`allow_network`).
    pub network: String,
    /// Extra labels put on every container, beside OpenShell's own `openshell.*` labels.
    pub labels: BTreeMap<String, String>,
    /// How often containers that no live job owns are looked for and removed.
    pub sweep_interval: DurationMs,
    /// Time allowed for one Docker API call (a job's own run is bounded by its timeout).
    pub api_timeout: DurationMs,
}

impl Default for DockerSettings {
    fn default() -> Self {
        Self {
            image: DEFAULT_IMAGE.to_string(),
            warm_pool: 2,
            endpoint: None,
            user: "1000:1000".to_string(),
            workdir: "/workspace".to_string(),
            tmpfs_size: ByteSize::mib(256),
            max_processes: 4096,
            max_open_files: 4096,
            path: "/usr/local/bin:/usr/bin:/bin".to_string(),
            network: "bridge".to_string(),
            labels: BTreeMap::new(),
            sweep_interval: DurationMs::secs(60),
            api_timeout: DurationMs::secs(30),
        }
    }
}
