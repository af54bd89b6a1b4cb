//! Verifying a host's key against a known_hosts file, as OpenSSH's
//! `StrictHostKeyChecking=yes` (or `accept-new`, when the operator opts in) would.

use std::path::Path;

use russh::keys::known_hosts::{known_host_keys_path, learn_known_hosts_path};
use russh::keys::{Algorithm, HashAlg, PublicKey};

use super::error::{HostKeyFacts, SshError};

/// One host as known_hosts names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostId<'a> {
    /// Host name or address, as configured.
    pub host: &'a str,
    /// Port.
    pub port: u16,
}

impl HostId<'_> {
    /// `host:port`, for messages.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The pattern known_hosts uses: `host` on port 22, `[host]:port` elsewhere.
    pub fn pattern(&self) -> String {
        if self.port == 22 {
            self.host.to_string()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }

    /// Arguments for `ssh-keyscan` that fetch this host's keys.
    pub fn keyscan_args(&self) -> String {
        if self.port == 22 {
            self.host.to_string()
        } else {
            format!("-p {} {}", self.port, self.host)
        }
    }
}

/// The key algorithms known_hosts records for `id`, so negotiation can ask for those first.
pub fn recorded_algorithms(id: &HostId<'_>, path: &Path) -> Vec<Algorithm> {
    let mut algorithms = Vec::new();
    for (_, key) in known_host_keys_path(id.host, id.port, path).unwrap_or_default() {
        let algorithm = key.algorithm();
        if !algorithms.contains(&algorithm) {
            algorithms.push(algorithm);
        }
    }
    algorithms
}

/// Accepts `presented` when known_hosts records it for `id`; records it first when
/// `accept_new` and the host is not listed at all. A different recorded key is always refused.
pub fn verify(
    id: &HostId<'_>,
    presented: &PublicKey,
    path: &Path,
    accept_new: bool,
) -> Result<(), SshError> {
    let shown = path.display().to_string();
    let recorded =
        known_host_keys_path(id.host, id.port, path).map_err(|error| SshError::KnownHosts {
            path: shown.clone(),
            cause: format!("{error}; fix or remove the malformed line"),
        })?;
    if recorded.iter().any(|(_, key)| key == presented) {
        return Ok(());
    }
    let facts = Box::new(HostKeyFacts {
        addr: id.addr(),
        known_hosts: shown.clone(),
        algorithm: presented.algorithm().as_str().to_string(),
        fingerprint: presented.fingerprint(HashAlg::Sha256).to_string(),
        pattern: id.pattern(),
        keyscan: id.keyscan_args(),
    });
    if let Some((line, _)) = recorded.first() {
        return Err(SshError::HostKeyChanged { facts, line: *line });
    }
    if !accept_new {
        return Err(SshError::HostKeyUnknown(facts));
    }
    let fingerprint = facts.fingerprint;
    learn_known_hosts_path(id.host, id.port, presented, path).map_err(|error| {
        SshError::KnownHosts {
            path: shown.clone(),
            cause: format!("recording the new key of {} failed: {error}", id.addr()),
        }
    })?;
    tracing::warn!(
        host = %id.addr(),
        %fingerprint,
        known_hosts = %shown,
        "accept_new_host_keys: recorded the key of a host seen for the first time"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use russh::keys::parse_public_key_base64;

    use super::*;

    const KEYS: [&str; 2] = [
        "AAAAC3NzaC1lZDI1NTE5AAAAIDzh1BVnIE7pkjTCLUF6q8s0YysYOIeDAIPEEGU1gY4U",
        "AAAAC3NzaC1lZDI1NTE5AAAAIDbOmI4b5DNyvkJrsADNkcZfDKGsrUL/COy71yKBTXwI",
    ];

    fn keys() -> (PublicKey, PublicKey) {
        let parse = |key| parse_public_key_base64(key).expect("key");
        (parse(KEYS[0]), parse(KEYS[1]))
    }

    fn line(id: &HostId<'_>, key: &PublicKey) -> String {
        format!("{} {}\n", id.pattern(), key.to_openssh().expect("openssh"))
    }

    #[test]
    fn known_keys_pass_unknown_and_changed_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let id = HostId {
            host: "127.0.0.1",
            port: 2222,
        };
        let (good, other) = keys();
        let unknown = verify(&id, &good, &path, false).unwrap_err();
        assert!(
            matches!(unknown, SshError::HostKeyUnknown { .. }),
            "{unknown}"
        );
        assert!(
            unknown
                .to_string()
                .contains("ssh-keyscan -p 2222 127.0.0.1")
        );
        std::fs::write(&path, line(&id, &good)).unwrap();
        verify(&id, &good, &path, false).unwrap();
        let changed = verify(&id, &other, &path, true).unwrap_err();
        assert!(
            matches!(changed, SshError::HostKeyChanged { line: 1, .. }),
            "{changed}"
        );
        assert_eq!(recorded_algorithms(&id, &path), vec![Algorithm::Ed25519]);
    }

    #[test]
    fn accept_new_records_the_first_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let id = HostId {
            host: "h.example",
            port: 22,
        };
        let (first, second) = keys();
        verify(&id, &first, &path, true).unwrap();
        verify(&id, &first, &path, false).unwrap();
        assert!(verify(&id, &second, &path, true).is_err());
    }
}
