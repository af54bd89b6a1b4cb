//! The worker's Ed25519 audit key: read from `OPENSHELL_AUDIT_KEY` (PKCS#8 PEM, as
//! `openssl genpkey -algorithm ed25519` writes it), or made at start when none is set. Public
//! keys, which auditors trust, are read as SubjectPublicKeyInfo PEM (`openssl pkey -pubout`)
//! or as 64 hex digits.

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::OsRng;

use super::chain::{hex, unhex};

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error(
        "cannot read the audit key {path}: {source}; set OPENSHELL_AUDIT_KEY to a readable file (deploy/setup.sh makes audit-key.pem in its state directory, /var/lib/openshell as root)"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no Ed25519 private key in PKCS#8 PEM.
    #[error(
        "{path} is not an Ed25519 private key in PKCS#8 PEM ({source}); make one with `openssl genpkey -algorithm ed25519 -out {path}`"
    )]
    Private {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ed25519_dalek::pkcs8::Error,
    },
    /// The file holds no Ed25519 public key.
    #[error(
        "{path} is not an Ed25519 public key: give SubjectPublicKeyInfo PEM (`openssl pkey -in KEY -pubout`) or 64 hex digits"
    )]
    Public {
        /// The file.
        path: PathBuf,
    },
}

/// A worker's signing key.
#[derive(Debug, Clone)]
pub struct AuditKey {
    signing: SigningKey,
    /// Made at start, not configured: nobody can have trusted it.
    ephemeral: bool,
}

impl AuditKey {
    /// The key in the PKCS#8 PEM file at `path`.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let signing = SigningKey::from_pkcs8_pem(&pem).map_err(|source| KeyError::Private {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            signing,
            ephemeral: false,
        })
    }

    /// A new key of this process only.
    pub fn ephemeral() -> Self {
        Self {
            signing: SigningKey::generate(&mut OsRng),
            ephemeral: true,
        }
    }

    /// The configured key at `path`, or, without one, an ephemeral key and a warning.
    pub fn configured(path: Option<&Path>) -> Result<Self, KeyError> {
        match path {
            Some(path) => Self::load(path),
            None => {
                let key = Self::ephemeral();
                tracing::warn!(
                    public_key = %key.public_hex(),
                    "no OPENSHELL_AUDIT_KEY: audit checkpoints are signed with a key made for this run, which no auditor can have trusted; set OPENSHELL_AUDIT_KEY (deploy/setup.sh makes one)"
                );
                Ok(key)
            }
        }
    }

    /// Whether the key was made at start rather than configured.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The public key, lowercase hex.
    pub fn public_hex(&self) -> String {
        hex(self.signing.verifying_key().as_bytes())
    }

    /// The signature of `message`, lowercase hex.
    pub fn sign_hex(&self, message: &[u8]) -> String {
        hex(&self.signing.sign(message).to_bytes())
    }
}

/// A public key an auditor trusts, from a file: SPKI PEM or 64 hex digits.
pub fn read_public(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let public = || KeyError::Public {
        path: path.to_path_buf(),
    };
    if text.contains("-----BEGIN PUBLIC KEY-----") {
        return VerifyingKey::from_public_key_pem(&text).map_err(|_| public());
    }
    let bytes = unhex::<32>(text.trim()).ok_or_else(public)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| public())
}

/// Whether `signature_hex` is `key_hex`'s Ed25519 signature of `message`.
pub fn verify_hex(key_hex: &str, message: &[u8], signature_hex: &str) -> bool {
    let (Some(key), Some(signature)) = (unhex::<32>(key_hex), unhex::<64>(signature_hex)) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(&key) else {
        return false;
    };
    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&signature))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_with_the_public_key_only() {
        let key = AuditKey::ephemeral();
        let signature = key.sign_hex(b"checkpoint");
        assert!(verify_hex(&key.public_hex(), b"checkpoint", &signature));
        assert!(!verify_hex(&key.public_hex(), b"checkpoinT", &signature));
        assert!(!verify_hex(
            &AuditKey::ephemeral().public_hex(),
            b"checkpoint",
            &signature
        ));
    }

    #[test]
    fn keys_from_openssl_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("audit-key.pem");
        let public = dir.path().join("audit-key.pub.pem");
        let openssl = |args: &[&str]| {
            std::process::Command::new("openssl")
                .args(args)
                .status()
                .is_ok_and(|status| status.success())
        };
        if !openssl(&[
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            private.to_str().unwrap(),
        ]) {
            assert!(!openshell_test_ci(), "openssl is needed in CI");
            return;
        }
        assert!(openssl(&[
            "pkey",
            "-in",
            private.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap()
        ]));
        let key = AuditKey::load(&private).unwrap();
        let trusted = read_public(&public).unwrap();
        assert_eq!(hex(trusted.as_bytes()), key.public_hex());
        std::fs::write(&public, key.public_hex()).unwrap();
        assert_eq!(
            hex(read_public(&public).unwrap().as_bytes()),
            key.public_hex()
        );
        assert!(matches!(
            AuditKey::load(&public),
            Err(KeyError::Private { .. })
        ));
    }

    fn openshell_test_ci() -> bool {
        std::env::var("CI").is_ok_and(|value| value == "true")
    }
}
