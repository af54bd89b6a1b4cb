//! Settings for the files jobs return (a request's `outputs`).
//!
//! | key (`[files]`) | env | default | meaning |
//! |---|---|---|---|
//! | `max_files` | `OPENSHELL_FILES_MAX_FILES` | `16` | files returned per job; more matches are skipped (`too_many_files`) |
//! | `max_bytes` | `OPENSHELL_FILES_MAX_BYTES` | `32m` | bytes returned per job, all files together (`too_large`) |
//! | `inline_bytes` | — | `256k` | bytes of file contents carried in the result itself; larger files go to the `OPENSHELL_FILES` object store |
//! | `ttl` | `OPENSHELL_FILES_TTL` | `24h` | how long stored files can be fetched |

use openshell_protocol::{ByteSize, DurationMs};
use serde::{Deserialize, Serialize};

/// Returned-files settings; see the module table for defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Files returned per job.
    pub max_files: u64,
    /// Bytes returned per job.
    pub max_bytes: ByteSize,
    /// Bytes of contents a result carries inline (at most 512k, so results fit in a message).
    pub inline_bytes: ByteSize,
    /// Lifetime of stored files (the object store's `max_age`).
    pub ttl: DurationMs,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            max_files: 16,
            max_bytes: ByteSize::mib(32),
            inline_bytes: ByteSize::kib(256),
            ttl: DurationMs::secs(24 * 3600),
        }
    }
}
