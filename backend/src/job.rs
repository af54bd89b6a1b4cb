//! A job as a backend sees it, and what it gets besides.

use std::collections::BTreeMap;

use openshell_protocol::decode::check_file_paths;
use openshell_protocol::{ErrorKind, Limits, Payload, RelativePath};
use tokio_util::sync::CancellationToken;

use crate::error::BackendError;
use crate::files::FilesRequest;
use crate::output::OutputSink;

/// A file to write into the job's working directory before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFile {
    /// Where, inside the working directory (checked when it was parsed: never outside it).
    pub path: RelativePath,
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
    /// When the pool holds the job to egress rules (then `network` is false: the sandbox gets
    /// no network but this endpoint); a backend that cannot mount it leaves
    /// [`LimitName::Egress`] out of its capabilities, and such jobs never reach it.
    ///
    /// [`LimitName::Egress`]: openshell_protocol::LimitName::Egress
    pub egress: Option<crate::EgressEndpoint>,
    /// Files to read out of the working directory after the program ends, when the request
    /// named `outputs`; a backend that cannot leaves [`LimitName::Files`] out of its
    /// capabilities, and such jobs never reach it.
    ///
    /// [`LimitName::Files`]: openshell_protocol::LimitName::Files
    pub outputs: Option<FilesRequest>,
}

impl JobFile {
    /// Refuses `files` that cannot all be written: two with one path, or one whose path
    /// another needs as a directory. The protocol's one rule, as the decoder applies it to
    /// requests; backends apply it before writing anything, since a job's code file joins the
    /// request's files after decoding.
    pub fn check_all(files: &[JobFile], backend: &'static str) -> Result<(), BackendError> {
        check_file_paths(files.iter().map(|file| &file.path)).map_err(|conflict| {
            let path = files
                .get(conflict.index())
                .map_or("files", |file| file.path.as_str());
            BackendError::new(
                ErrorKind::InvalidRequest,
                backend,
                path,
                conflict.to_string(),
            )
        })
    }
}

impl Job {
    /// [`JobFile::check_all`] of this job's files.
    pub fn check_files(&self, backend: &'static str) -> Result<(), BackendError> {
        JobFile::check_all(&self.files, backend)
    }
}

/// What a backend receives besides the job: how to stop, and where output goes.
#[derive(Debug, Clone)]
pub struct JobControl {
    /// Cancelled when a client cancels the job or the worker shuts down.
    pub cancel: CancellationToken,
    /// Where stdout and stderr go; it enforces the output limit.
    pub output: OutputSink,
}
