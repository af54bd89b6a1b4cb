//! Loading the client's private key: ed25519 or RSA, unencrypted, readable by its owner only.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use russh::keys::{Algorithm, PrivateKey, load_secret_key};

use super::error::SshError;

/// Loads the key at `path`, refusing group- or world-accessible files as OpenSSH does.
pub fn load(path: &Path) -> Result<Arc<PrivateKey>, SshError> {
    let fail = |cause: String| SshError::KeyFile {
        path: path.to_path_buf(),
        cause,
    };
    let metadata = std::fs::metadata(path).map_err(|error| {
        fail(format!(
            "{error}; set SSH_KEY_PATH to an existing key (create one with `ssh-keygen -t ed25519 -f {}`)",
            path.display()
        ))
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(fail(format!(
            "permissions {mode:04o} are too open: other users could read the key; run `chmod 600 {}`",
            path.display()
        )));
    }
    let key = load_secret_key(path, None).map_err(|error| {
        fail(format!(
            "{error}; give an unencrypted OpenSSH or PEM private key (ed25519 or RSA)"
        ))
    })?;
    match key.algorithm() {
        Algorithm::Ed25519 | Algorithm::Rsa { .. } => Ok(Arc::new(key)),
        other => Err(fail(format!(
            "{} keys are not supported; use an ed25519 or RSA key",
            other.as_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::fs::Permissions;

    use super::*;

    #[test]
    fn loose_permissions_are_refused_with_the_chmod_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        std::fs::write(&path, "not a key").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(
            error.contains(&format!("chmod 600 {}", path.display())),
            "{error}"
        );
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(error.contains("unencrypted"), "{error}");
        assert!(load(&dir.path().join("missing")).is_err());
    }
}
