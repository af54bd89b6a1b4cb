//! A typed async client: submit a job over NATS and await its result.
//!
//! ```no_run
//! # async fn run() -> Result<(), openshell_protocol::ClientError> {
//! use openshell_protocol::{Client, ExecRequest};
//! let client = Client::connect("nats://127.0.0.1:4222").await?;
//! let result = client.exec("none", "default", &ExecRequest::code("job-1", "python", "print(6*7)")).await?;
//! assert_eq!(result.stdout.to_text_lossy(), "42\n");
//! # Ok(()) }
//! ```

use std::time::Duration;

use async_nats::RequestErrorKind;
use bytes::Bytes;

use crate::error::ErrorInfo;
use crate::outputs::{FILE_ERROR_HEADER, FileFetch, ReturnedFile};
use crate::request::{ExecRequest, sha256_hex};
use crate::result::ExecResult;
use crate::subjects::{Subjects, check_token};

/// Time added to a job's own timeout while waiting for its result (queueing, start, reply).
pub const REPLY_MARGIN: Duration = Duration::from_secs(30);
/// How long to wait for a job that names no timeout.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(120);

/// Why a job could not be submitted or its result not read. A job that ran and failed is not a
/// `ClientError`: it is an [`ExecResult`] with a non-`completed` status.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect to NATS.
    #[error(
        "could not connect to NATS at {url}: {source}; is nats-server running (deploy/setup.sh starts one)?"
    )]
    Connect {
        /// Server URL.
        url: String,
        /// The cause.
        source: async_nats::ConnectError,
    },
    /// A pool, tenant or id is not a valid subject token, or the request does not encode.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No worker serves the pool.
    #[error(
        "no worker is serving pool `{pool}` on {subject}: start one with `openshell worker`, or check the pool name and subject prefix"
    )]
    NoWorkers {
        /// Pool asked for.
        pool: String,
        /// Subject the request went to.
        subject: String,
    },
    /// No result came back in time.
    #[error(
        "no result for job `{id}` within {waited:?}: the worker may be overloaded or gone, or the job still running; cancel it before resubmitting (the same id is refused while it runs), or wait longer"
    )]
    TimedOut {
        /// Job id.
        id: String,
        /// How long the client waited.
        waited: Duration,
    },
    /// The NATS request failed for another reason.
    #[error("NATS request to {subject} failed: {message}")]
    Nats {
        /// Subject.
        subject: String,
        /// The cause.
        message: String,
    },
    /// A returned file could not be fetched, or was not what the result said.
    #[error("file `{path}` of job `{id}` could not be fetched: {message}")]
    File {
        /// Job id.
        id: String,
        /// The file's path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A session request was refused (`session_limit`, `session_busy`, `not_found`, ...),
    /// or the session is gone (`session_lost`: no worker holds it any more).
    #[error("session request on {subject} failed: {error}")]
    Session {
        /// Subject the request went to.
        subject: String,
        /// The kind and what to do.
        error: ErrorInfo,
    },
    /// The reply is not an ExecResult.
    #[error("the reply to job `{id}` is not a valid ExecResult: {message}")]
    BadReply {
        /// Job id.
        id: String,
        /// Decoder's account.
        message: String,
    },
}

/// An OpenShell client over one NATS connection.
#[derive(Debug, Clone)]
pub struct Client {
    nats: async_nats::Client,
    subjects: Subjects,
}

impl Client {
    /// Connects to `url` (comma-separated list allowed) with default options.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let nats = async_nats::connect(url)
            .await
            .map_err(|source| ClientError::Connect {
                url: url.to_string(),
                source,
            })?;
        Ok(Self::new(nats, Subjects::default()))
    }

    /// A client over an existing connection and subject prefix.
    pub fn new(nats: async_nats::Client, subjects: Subjects) -> Self {
        Self { nats, subjects }
    }

    /// The underlying NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// The subject scheme in use.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// Runs `request` on `pool` as `tenant` and waits for its result.
    pub async fn exec(
        &self,
        pool: &str,
        tenant: &str,
        request: &ExecRequest,
    ) -> Result<ExecResult, ClientError> {
        let wait = reply_wait(request);
        self.exec_with_wait(pool, tenant, request, wait).await
    }

    /// Like [`Client::exec`], waiting at most `wait` for the result.
    pub async fn exec_with_wait(
        &self,
        pool: &str,
        tenant: &str,
        request: &ExecRequest,
        wait: Duration,
    ) -> Result<ExecResult, ClientError> {
        check_token("pool", pool).map_err(|error| ClientError::Invalid(error.to_string()))?;
        check_token("tenant", tenant).map_err(|error| ClientError::Invalid(error.to_string()))?;
        let payload =
            serde_json::to_vec(request).map_err(|error| ClientError::Invalid(error.to_string()))?;
        let subject = self.subjects.exec(pool, tenant);
        let raw = async_nats::Request::new()
            .payload(Bytes::from(payload))
            .timeout(Some(wait));
        let reply =
            self.nats
                .send_request(subject.clone(), raw)
                .await
                .map_err(|error| match error.kind() {
                    RequestErrorKind::NoResponders => ClientError::NoWorkers {
                        pool: pool.to_string(),
                        subject: subject.clone(),
                    },
                    RequestErrorKind::TimedOut => ClientError::TimedOut {
                        id: request.id.clone(),
                        waited: wait,
                    },
                    _ => ClientError::Nats {
                        subject: subject.clone(),
                        message: error.to_string(),
                    },
                })?;
        serde_json::from_slice(&reply.payload).map_err(|error| ClientError::BadReply {
            id: request.id.clone(),
            message: error.to_string(),
        })
    }

    /// The contents of `file`, returned by `tenant`'s job `job_id`: inline ones as they came,
    /// stored ones fetched part by part from `<prefix>.files.<tenant>.<job_id>`; checked
    /// against the file's size and SHA-256 either way.
    pub async fn fetch_file(
        &self,
        tenant: &str,
        job_id: &str,
        file: &ReturnedFile,
    ) -> Result<Vec<u8>, ClientError> {
        let failed = |message: String| ClientError::File {
            id: job_id.to_string(),
            path: file.path.to_string(),
            message,
        };
        let content = match &file.content {
            Some(content) => content.0.clone(),
            None => self
                .fetch_stored(tenant, job_id, file)
                .await
                .map_err(failed)?,
        };
        if content.len() as u64 != file.size || sha256_hex(&content) != file.sha256 {
            return Err(failed(format!(
                "got {} bytes that do not match the result's size {} and sha256 {}",
                content.len(),
                file.size,
                file.sha256
            )));
        }
        Ok(content)
    }

    async fn fetch_stored(
        &self,
        tenant: &str,
        job_id: &str,
        file: &ReturnedFile,
    ) -> Result<Vec<u8>, String> {
        check_token("tenant", tenant).map_err(|error| error.to_string())?;
        check_token("job id", job_id).map_err(|error| error.to_string())?;
        let subject = self.subjects.files(tenant, job_id);
        let mut content = Vec::with_capacity(file.size as usize);
        loop {
            let fetch = FileFetch {
                path: file.path.clone(),
                offset: content.len() as u64,
            };
            let payload = serde_json::to_vec(&fetch).map_err(|error| error.to_string())?;
            let reply = self
                .nats
                .request(subject.clone(), Bytes::from(payload))
                .await
                .map_err(|error| format!("request on {subject} failed: {error}"))?;
            if let Some(kind) = reply
                .headers
                .as_ref()
                .and_then(|headers| headers.get(FILE_ERROR_HEADER))
            {
                return Err(format!(
                    "{kind}: {}",
                    serde_json::from_slice::<ErrorInfo>(&reply.payload).map_or_else(
                        |_| String::from_utf8_lossy(&reply.payload).into_owned(),
                        |info| info.message
                    )
                ));
            }
            content.extend_from_slice(&reply.payload);
            if content.len() as u64 >= file.size {
                return Ok(content);
            }
            if reply.payload.is_empty() {
                return Err(format!(
                    "the store ended at {} of {} bytes",
                    content.len(),
                    file.size
                ));
            }
        }
    }

    /// Asks every worker to cancel job `job_id` of `tenant`; a no-op where it is not running.
    pub async fn cancel(&self, tenant: &str, job_id: &str) -> Result<(), ClientError> {
        check_token("tenant", tenant).map_err(|error| ClientError::Invalid(error.to_string()))?;
        check_token("job id", job_id).map_err(|error| ClientError::Invalid(error.to_string()))?;
        let subject = self.subjects.cancel(tenant, job_id);
        self.nats
            .publish(subject.clone(), Bytes::new())
            .await
            .map_err(|error| ClientError::Nats {
                subject: subject.clone(),
                message: error.to_string(),
            })?;
        self.nats.flush().await.map_err(|error| ClientError::Nats {
            subject,
            message: error.to_string(),
        })
    }
}

/// How long to wait for the result of `request`: its wall timeout and a margin, or the default.
pub(crate) fn reply_wait(request: &ExecRequest) -> Duration {
    request
        .limits
        .timeout
        .map_or(DEFAULT_WAIT, |timeout| timeout.as_duration() + REPLY_MARGIN)
}
