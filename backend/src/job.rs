//! A job as a backend sees it, and what it gets besides.

use std::collections::BTreeMap;

use openshell_protocol::{Limits, Payload};
use tokio_util::sync::CancellationToken;

use crate::output::OutputSink;

/// A file to write into the job's working directory before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFile {
    /// Relative path (validated: no `..`, no leading `/`).
    pub path: String,
    /// Contents.
    pub content: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// A job as a backend sees it: admitted, with its program resolved and its limits in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The client's job id.
    pub id: String,
    /// The tenant it runs for.
    pub tenant: String,
    /// The request's language, if it gave one (backends may pick an image by it).
    pub language: Option<String>,
    /// The program and its arguments; `argv[0]` is looked up on the sandbox's PATH.
    pub argv: Vec<String>,
    /// Bytes for standard input (empty: stdin is closed).
    pub stdin: Payload,
    /// Environment variables, on top of a minimal PATH and HOME.
    pub env: BTreeMap<String, String>,
    /// Files for the working directory, including the code file of a `language` job.
    pub files: Vec<JobFile>,
    /// Effective limits.
    pub limits: Limits,
    /// Whether the pool granted network access.
    pub network: bool,
}

/// What a backend receives besides the job: how to stop, and where output goes.
#[derive(Debug, Clone)]
pub struct JobControl {
    /// Cancelled when a client cancels the job or the worker shuts down.
    pub cancel: CancellationToken,
    /// Where stdout and stderr go; it enforces the output limit.
    pub output: OutputSink,
}
