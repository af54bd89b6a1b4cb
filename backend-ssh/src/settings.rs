//! The `[pools.NAME.ssh]` section.

use std::path::PathBuf;

use openshell_protocol::{ByteSize, DurationMs};
use serde::{Deserialize, Serialize};

/// sshd's default `MaxSessions`: channels one connection may carry at once.
pub const SSHD_MAX_SESSIONS: usize = 10;
/// Where `deploy/ssh-host/prepare.sh` installs the sandbox helper.
pub const DEFAULT_HELPER: &str = "/usr/local/libexec/openshell/sandbox";

/// How the SSH backend reaches its hosts and runs jobs there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SshSettings {
    /// Hosts jobs spread across (`SSH_HOST`, comma-separated); `host` or `host:port`.
    pub hosts: Vec<String>,
    /// Remote (transport) user the worker logs in as; never root, and never the user jobs run
    /// as: jobs get a uid of the host's pool (`SSH_USER`).
    pub user: String,
    /// Private key file, ed25519 or RSA, mode 600 (`SSH_KEY_PATH`).
    pub key_path: Option<PathBuf>,
    /// Port for hosts that name none (`SSH_PORT`).
    pub port: u16,
    /// known_hosts file the host keys are verified against (`SSH_KNOWN_HOSTS`;
    /// `~/.ssh/known_hosts` when unset).
    pub known_hosts: Option<PathBuf>,
    /// Record the key of a host missing from known_hosts on first contact (trust on first
    /// use). Off by default: an unknown host is refused. A changed key is always refused.
    pub accept_new_host_keys: bool,
    /// Time allowed to connect and authenticate.
    pub connect_timeout: DurationMs,
    /// Jobs one connection carries at once; keep it below sshd's `MaxSessions` (10), which
    /// must also leave room for the short channels that kill jobs.
    pub channels_per_connection: usize,
    /// Connections kept to each host at most.
    pub max_connections: usize,
    /// Interval of SSH keepalives; a connection missing `keepalive_max` replies is replaced.
    pub keepalive: DurationMs,
    /// Unanswered keepalives before a connection counts as broken.
    pub keepalive_max: usize,
    /// How long a down host is skipped at most before it is tried again.
    pub retry_down_host_after: DurationMs,
    /// The sandbox helper on the hosts, run through sudo (installed by
    /// `deploy/ssh-host/prepare.sh`).
    pub helper: String,
    /// PATH given to jobs on the remote host.
    pub path: String,
    /// Size of the working directory, /tmp and /var/tmp tmpfs of a job without a disk limit.
    pub tmpfs_size: ByteSize,
    /// Refuse hosts whose sandbox lacks a memory, pids, cpu or CPU accounting cgroup (fail
    /// closed for the whole host), instead of refusing only the limits that need them.
    pub require_cgroups: bool,
}

impl Default for SshSettings {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            user: "openshell".to_string(),
            key_path: None,
            port: 22,
            known_hosts: None,
            accept_new_host_keys: false,
            connect_timeout: DurationMs::secs(10),
            channels_per_connection: 8,
            max_connections: 8,
            keepalive: DurationMs::secs(15),
            keepalive_max: 3,
            retry_down_host_after: DurationMs::secs(30),
            helper: DEFAULT_HELPER.to_string(),
            path: "/usr/local/bin:/usr/bin:/bin".to_string(),
            tmpfs_size: ByteSize::mib(256),
            require_cgroups: false,
        }
    }
}

impl SshSettings {
    /// `~/.ssh/known_hosts` of the worker's user, or the configured file.
    pub fn known_hosts_path(&self) -> PathBuf {
        self.known_hosts.clone().unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map_or_else(|| PathBuf::from("/root"), PathBuf::from)
                .join(".ssh/known_hosts")
        })
    }

    /// Each configured host as (name, port).
    pub fn host_addrs(&self) -> Vec<(String, u16)> {
        self.hosts
            .iter()
            .map(|host| split_host_port(host, self.port))
            .collect()
    }

    /// What is wrong with these settings, if anything, as (key, reason).
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.hosts.is_empty() {
            return Some((
                "hosts",
                "give at least one host (SSH_HOST, comma-separated)".into(),
            ));
        }
        if self.user.is_empty() || self.user == "root" {
            return Some((
                "user",
                format!(
                    "`{}` cannot be the transport user (nothing OpenShell starts may run as root); set \
                     SSH_USER to the unprivileged user deploy/ssh-host/prepare.sh --user creates",
                    self.user
                ),
            ));
        }
        if self.key_path.is_none() {
            return Some((
                "key_path",
                "give the private key file (SSH_KEY_PATH)".into(),
            ));
        }
        if !(1..SSHD_MAX_SESSIONS).contains(&self.channels_per_connection) {
            return Some((
                "channels_per_connection",
                format!(
                    "must be 1 to {} (below sshd's MaxSessions {SSHD_MAX_SESSIONS}, leaving room to kill jobs)",
                    SSHD_MAX_SESSIONS - 1
                ),
            ));
        }
        if self.max_connections == 0 {
            return Some(("max_connections", "must be at least 1".into()));
        }
        if !self.helper.starts_with('/') {
            return Some((
                "helper",
                format!(
                    "`{}` is not an absolute path; the default is {DEFAULT_HELPER}",
                    self.helper
                ),
            ));
        }
        if self.tmpfs_size.bytes() == 0 {
            return Some(("tmpfs_size", "must be more than 0 bytes".into()));
        }
        None
    }
}

/// `host:port` or `[v6]:port` split, with `default_port` when none is given.
fn split_host_port(host: &str, default_port: u16) -> (String, u16) {
    if let Some(rest) = host.strip_prefix('[')
        && let Some((name, port)) = rest.split_once("]:")
        && let Ok(port) = port.parse()
    {
        return (name.to_string(), port);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => match port.parse() {
            Ok(port) => (name.to_string(), port),
            Err(_) => (host.to_string(), default_port),
        },
        _ => (host.to_string(), default_port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_take_their_own_port_or_the_default() {
        assert_eq!(split_host_port("a.example", 22), ("a.example".into(), 22));
        assert_eq!(
            split_host_port("a.example:2222", 22),
            ("a.example".into(), 2222)
        );
        assert_eq!(split_host_port("[::1]:2200", 22), ("::1".into(), 2200));
        assert_eq!(split_host_port("::1", 22), ("::1".into(), 22));
    }

    #[test]
    fn root_and_missing_keys_are_refused() {
        let mut settings = SshSettings {
            hosts: vec!["h".into()],
            key_path: Some("/k".into()),
            ..SshSettings::default()
        };
        assert_eq!(settings.problem(), None);
        settings.user = "root".into();
        assert_eq!(settings.problem().map(|(key, _)| key), Some("user"));
        settings.user = "u".into();
        settings.helper = "sandbox".into();
        assert_eq!(settings.problem().map(|(key, _)| key), Some("helper"));
        settings.helper = DEFAULT_HELPER.into();
        settings.channels_per_connection = 10;
        assert_eq!(
            settings.problem().map(|(key, _)| key),
            Some("channels_per_connection")
        );
    }
}
