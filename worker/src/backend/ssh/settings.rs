//! The `[pools.NAME.ssh]` section.

use std::path::PathBuf;

use openshell_protocol::DurationMs;
use serde::{Deserialize, Serialize};

/// How the SSH backend reaches its hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SshSettings {
    /// Hosts jobs spread across (`SSH_HOST`, comma-separated).
    pub hosts: Vec<String>,
    /// Remote user; never root (`SSH_USER`).
    pub user: String,
    /// Private key file, ed25519 or RSA, mode 600 (`SSH_KEY_PATH`).
    pub key_path: Option<PathBuf>,
    /// Port (`SSH_PORT`).
    pub port: u16,
    /// known_hosts file the host keys are verified against (`SSH_KNOWN_HOSTS`).
    pub known_hosts: Option<PathBuf>,
    /// Time allowed to connect and authenticate.
    pub connect_timeout: DurationMs,
}

impl Default for SshSettings {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            user: "openshell".to_string(),
            key_path: None,
            port: 22,
            known_hosts: None,
            connect_timeout: DurationMs::secs(10),
        }
    }
}
