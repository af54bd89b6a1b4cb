//! The worker as a NATS micro service: `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` answer, so
//! operators find workers with standard NATS tooling (`nats micro ls openshell`).
//!
//! `$SRV.INFO` metadata names the worker id, pools and backends; the `status` endpoint's
//! `$SRV.STATS` data is a [`WorkerStatus`]: pools, backends, health, slots, load and limits.

pub mod status;

use std::collections::HashMap;

use futures::StreamExt;
use openshell_protocol::Subjects;

pub use status::{PoolHandle, PoolStatus, StatusSource, WorkerStatus};

/// The service name every worker registers under.
pub const SERVICE_NAME: &str = "openshell";

/// Why the service could not be registered.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot register the NATS micro service `{SERVICE_NAME}`: {message}; the worker needs subscribe permission on `$SRV.>` and `{subject}`"
)]
pub struct ServiceError {
    /// The status endpoint's subject.
    pub subject: String,
    /// The cause.
    pub message: String,
}

/// The subject of a worker's own status endpoint: `<prefix>.workers.<worker id>.status`.
pub fn status_subject(subjects: &Subjects, worker_id: &str) -> String {
    let id: String = worker_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}.workers.{id}.status", subjects.prefix())
}

/// Registers the service and answers status requests until the connection closes.
pub async fn register(
    nats: async_nats::Client,
    subjects: &Subjects,
    source: StatusSource,
) -> Result<tokio::task::JoinHandle<()>, ServiceError> {
    use async_nats::service::ServiceExt;
    let subject = status_subject(subjects, &source.worker_id);
    let error = |error: async_nats::Error| ServiceError {
        subject: subject.clone(),
        message: error.to_string(),
    };
    let metadata = HashMap::from([
        (status::META_WORKER_ID.to_string(), source.worker_id.clone()),
        (
            status::META_POOLS.to_string(),
            join(&source, |pool| &pool.name),
        ),
        (
            status::META_BACKENDS.to_string(),
            join(&source, |pool| &pool.backend),
        ),
    ]);
    let stats_source = source.clone();
    let service = nats
        .service_builder()
        .description("OpenShell worker: runs sandboxed jobs from NATS")
        .metadata(metadata)
        .stats_handler(move |_endpoint, _stats| {
            serde_json::to_value(stats_source.snapshot()).unwrap_or_default()
        })
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(error)?;
    let mut endpoint = service
        .endpoint_builder()
        .name("status")
        .add(subject.clone())
        .await
        .map_err(error)?;
    tracing::info!(service = SERVICE_NAME, %subject, "registered as a NATS micro service");
    Ok(tokio::spawn(async move {
        // Keep the service alive for as long as its endpoint is.
        let _service = service;
        while let Some(request) = endpoint.next().await {
            let body = serde_json::to_vec(&source.snapshot()).unwrap_or_default();
            if let Err(error) = request.respond(Ok(body.into())).await {
                tracing::debug!(%error, "could not answer a status request");
            }
        }
    }))
}

fn join(source: &StatusSource, field: impl Fn(&PoolHandle) -> &String) -> String {
    source
        .pools
        .iter()
        .map(|pool| field(pool).as_str())
        .collect::<Vec<_>>()
        .join(",")
}
