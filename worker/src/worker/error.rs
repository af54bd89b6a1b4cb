//! Why a worker could not start: each error names the step, and its cause is kept as its
//! source.

use openshell_backend::BackendError;

use crate::audit::KeyError;
use crate::durable::DurableError;
use crate::intake::IntakeError;
use crate::metrics::server::ServeError;
use crate::nats::{ConnectError, Violations};
use crate::service::ServiceError;

/// Why [`super::Worker::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// NATS could not be connected to.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The audit signing key could not be read.
    #[error(transparent)]
    AuditKey(#[from] KeyError),
    /// The metrics endpoint could not listen.
    #[error(transparent)]
    Metrics(#[from] ServeError),
    /// A pool's backend could not be built.
    #[error("pool `{pool}`")]
    Backend {
        /// The pool.
        pool: String,
        /// The backend's account.
        #[source]
        source: BackendError,
    },
    /// A pool's request subject could not be subscribed to.
    #[error(transparent)]
    Intake(#[from] IntakeError),
    /// Durable mode could not set up its streams, buckets or consumers.
    #[error(transparent)]
    Durable(#[from] DurableError),
    /// The NATS micro service could not be registered.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The subscriptions could not be flushed to the server.
    #[error("flushing subscriptions to NATS")]
    Flush(#[source] async_nats::client::FlushError),
    /// The server refused some of the worker's subscriptions: the worker would look ready and
    /// never receive a job.
    #[error(
        "the NATS server refused the worker's subscriptions ({}); the worker would take no jobs. \
         Grant its user subscribe on <prefix>.exec.>, <prefix>.cancel.> and (durable mode) the \
         JetStream API, as the worker user in deploy/nats/accounts.conf has",
        refused.join("; ")
    )]
    SubscriptionsRefused {
        /// The server's words, one per refusal.
        refused: Vec<String>,
    },
}

/// Fails when the server refused any of the worker's subscriptions. The server reports a
/// refusal before it answers the flush; the short pause lets the report reach the
/// connection's event handler.
pub(super) async fn refused_subscriptions(violations: &Violations) -> Result<(), WorkerError> {
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let refused: Vec<String> = violations
        .all()
        .into_iter()
        .filter(|violation| violation.to_lowercase().contains("subscription"))
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    Err(WorkerError::SubscriptionsRefused { refused })
}
