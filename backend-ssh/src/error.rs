//! What can go wrong reaching a host or running a job there, each with what to do.

use std::path::PathBuf;

use openshell_protocol::ErrorKind;

use super::KIND;
use openshell_backend::BackendError;

/// The prefix of every connection error, as the seed words it.
const CONNECTION_FAILED: &str = "Sandbox connection failed";

/// An SSH backend failure; [`SshError::into_backend`] turns it into the wire error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshError {
    /// TCP connect or the SSH handshake failed or timed out.
    #[error(
        "{CONNECTION_FAILED}: host unreachable: {cause}; check that sshd runs on {addr} and that \
         the worker can reach it (e.g. `ssh -p PORT USER@HOST true`)"
    )]
    Unreachable {
        /// host:port.
        addr: String,
        /// The I/O or protocol error.
        cause: String,
    },
    /// The host presented a key that known_hosts does not list.
    #[error(
        "{CONNECTION_FAILED}: host key mismatch: host {} is not in {} (its {} key is {}); after \
         checking that fingerprint out of band, add it with `ssh-keyscan {} >> {}`, or set \
         accept_new_host_keys = true to trust on first use",
        .0.addr, .0.known_hosts, .0.algorithm, .0.fingerprint, .0.keyscan, .0.known_hosts
    )]
    HostKeyUnknown(Box<HostKeyFacts>),
    /// The host presented a key different from the one known_hosts records at `line`.
    #[error(
        "{CONNECTION_FAILED}: host key mismatch: host {} presented {} key {}, but {} line {line} \
         records another key for it. Someone may be intercepting the connection, or the host was \
         reinstalled; if you know it was, remove the old key with `ssh-keygen -R '{}' -f {}` and \
         add the new one with `ssh-keyscan {}`",
        .facts.addr, .facts.algorithm, .facts.fingerprint, .facts.known_hosts, .facts.pattern,
        .facts.known_hosts, .facts.keyscan
    )]
    HostKeyChanged {
        /// What was presented and where it was checked.
        facts: Box<HostKeyFacts>,
        /// Line of the recorded key.
        line: usize,
    },
    /// known_hosts could not be read or written.
    #[error("{CONNECTION_FAILED}: cannot use known_hosts file {path}: {cause}")]
    KnownHosts {
        /// The file.
        path: String,
        /// Why.
        cause: String,
    },
    /// The server refused the key.
    #[error(
        "{CONNECTION_FAILED}: auth refused: {addr} did not accept key {key} for user `{user}`; on the host, \
         run deploy/ssh-host/prepare.sh --user {user} --pubkey FILE with its public key (`ssh-keygen -y -f {key}`), \
         which writes the root-owned /etc/openshell/authorized_keys/{user}"
    )]
    AuthRefused {
        /// host:port.
        addr: String,
        /// Remote user.
        user: String,
        /// Private key file.
        key: String,
    },
    /// The private key file is unusable.
    #[error("cannot use SSH private key {path}: {cause}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why, and what to do.
        cause: String,
    },
    /// The host's sandbox helper is missing, refuses, or finds the host unfit for jobs.
    #[error("host {addr} is not prepared for jobs: {cause}")]
    HostUnfit {
        /// host:port.
        addr: String,
        /// What is wrong and what to do.
        cause: String,
    },
    /// The connection dropped or a channel could not be opened.
    #[error("{CONNECTION_FAILED}: {cause} on {addr}")]
    Lost {
        /// host:port.
        addr: String,
        /// What was happening.
        cause: String,
    },
    /// The sandbox helper could not start the job on the host.
    #[error("preparing the job on {addr} failed: {cause}")]
    Setup {
        /// host:port.
        addr: String,
        /// The remote message.
        cause: String,
    },
    /// The remote refused an operation with EACCES.
    #[error(
        "Permission denied in sandbox: {cause} on {addr}; check that the job's program is readable and \
         executable by every user on the host"
    )]
    Denied {
        /// host:port.
        addr: String,
        /// The remote message.
        cause: String,
    },
    /// The request cannot be expressed on the remote (a bad path or name).
    #[error("{0}")]
    Invalid(String),
}

/// What a host key refusal reports: the host, the file, the key, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyFacts {
    /// host:port.
    pub addr: String,
    /// The known_hosts file.
    pub known_hosts: String,
    /// Algorithm of the presented key.
    pub algorithm: String,
    /// SHA256 fingerprint of the presented key.
    pub fingerprint: String,
    /// The known_hosts host pattern (`host` or `[host]:port`).
    pub pattern: String,
    /// Arguments for ssh-keyscan (`-p PORT HOST`).
    pub keyscan: String,
}

impl SshError {
    /// The machine-readable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SshError::Unreachable { .. }
            | SshError::HostKeyUnknown(_)
            | SshError::HostKeyChanged { .. }
            | SshError::KnownHosts { .. }
            | SshError::AuthRefused { .. }
            | SshError::Lost { .. } => ErrorKind::ConnectionFailed,
            SshError::KeyFile { .. } | SshError::HostUnfit { .. } => ErrorKind::SandboxStartFailed,
            SshError::Denied { .. } => ErrorKind::PermissionDenied,
            SshError::Setup { .. } => ErrorKind::SandboxStartFailed,
            SshError::Invalid(_) => ErrorKind::InvalidRequest,
        }
    }

    /// True when retrying the same host later may succeed (as opposed to a configuration fault).
    pub fn is_transient(&self) -> bool {
        matches!(self, SshError::Unreachable { .. } | SshError::Lost { .. })
    }

    /// Where it happened.
    pub fn location(&self) -> String {
        match self {
            SshError::HostKeyUnknown(facts) | SshError::HostKeyChanged { facts, .. } => {
                facts.addr.clone()
            }
            SshError::Unreachable { addr, .. }
            | SshError::AuthRefused { addr, .. }
            | SshError::HostUnfit { addr, .. }
            | SshError::Lost { addr, .. }
            | SshError::Setup { addr, .. }
            | SshError::Denied { addr, .. } => addr.clone(),
            SshError::KnownHosts { path, .. } => path.clone(),
            SshError::KeyFile { path, .. } => path.display().to_string(),
            SshError::Invalid(_) => "request".to_string(),
        }
    }

    /// The error as the worker reports it.
    pub fn into_backend(self) -> BackendError {
        BackendError::new(self.kind(), KIND, self.location(), self.to_string())
    }
}

impl From<SshError> for BackendError {
    fn from(error: SshError) -> Self {
        error.into_backend()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_carry_the_seed_message_and_kind() {
        let error = SshError::AuthRefused {
            addr: "h:22".into(),
            user: "u".into(),
            key: "/k".into(),
        };
        assert_eq!(error.kind(), ErrorKind::ConnectionFailed);
        let backend = error.into_backend();
        assert!(
            backend
                .message
                .starts_with("Sandbox connection failed: auth refused")
        );
        assert_eq!(backend.where_, "h:22");
        let denied = SshError::Denied {
            addr: "h:22".into(),
            cause: "mktemp: Permission denied".into(),
        };
        assert_eq!(denied.kind(), ErrorKind::PermissionDenied);
        assert!(
            denied
                .to_string()
                .starts_with("Permission denied in sandbox")
        );
    }
}
