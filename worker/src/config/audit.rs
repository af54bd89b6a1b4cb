//! Settings of the audit chain's checkpoints.
//!
//! | key (`[audit]`) | env | default | meaning |
//! |---|---|---|---|
//! | `key` | `OPENSHELL_AUDIT_KEY` | none | the worker's Ed25519 signing key, PKCS#8 PEM (`openssl genpkey -algorithm ed25519`; `deploy/setup.sh` makes one); without it the worker signs with a key of its own start, which no auditor can have trusted, and warns |
//! | `checkpoint_interval` | `OPENSHELL_AUDIT_CHECKPOINT_INTERVAL` | `60s` | how often a signed checkpoint of the chain is published (and once more when the worker stops) |
//!
//! The audit stream's retention (`durable.audit_max_age`, `durable.audit_max_bytes`) is with
//! the other streams in `config::DurableConfig`.

use std::path::PathBuf;

use openshell_protocol::DurationMs;
use serde::{Deserialize, Serialize};

/// Audit-chain settings; see the module table for defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The Ed25519 signing key (PKCS#8 PEM file).
    pub key: Option<PathBuf>,
    /// How often a signed checkpoint is published.
    pub checkpoint_interval: DurationMs,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            key: None,
            checkpoint_interval: DurationMs::secs(60),
        }
    }
}
