//! Live output: a job's stdout and stderr as they are produced, for requests with `stream`.
//!
//! Chunks of one job go to `<prefix>.output.<tenant>.<id>` ([`crate::Subjects::output`]),
//! numbered from 0 in the order the job wrote them; each holds bytes of one stream. Together
//! they are exactly the output the result carries (the same output limit applies), and the
//! last one is published before the result.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::payload::Payload;

/// Which stream a chunk's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Bytes a running job wrote to one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputChunk {
    /// Protocol version (1).
    pub version: u32,
    /// The job's id.
    pub id: String,
    /// Position among the job's chunks, from 0, without gaps.
    pub seq: u64,
    /// The stream written to.
    pub stream: OutputStream,
    /// The bytes, as in results (text, or base64 for binary).
    pub data: Payload,
}
