//! Cancelling queued jobs. A message on `<prefix>.cancel.<tenant>.<id>` reaches every worker,
//! and the one running the job stops it (`crate::intake::serve_cancel`); it also reaches one
//! durable worker (queue group `<prefix>.cancellers`), which stores `cancelled` as the result
//! of a job still in `OPENSHELL_JOBS`. The worker that later pulls that job finds the stored
//! result, does not run it, and audits it as `rejected` (cancelled).
//!
//! A job stays in the work queue until its result is stored, so a job found there may be
//! running: then its run lease is held, and the canceller leaves it to its runner, which stops
//! it on the same message and stores its own `cancelled` result, with the output it had.

use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use futures::StreamExt;
use openshell_protocol::subjects::check_token;
use openshell_protocol::{ErrorInfo, ErrorKind, ExecResult, Subjects, Verdict};
use tokio_util::sync::CancellationToken;

use super::DurableError;
use super::lease::Leases;
use super::results::{self, Stored};

/// Stores cancellations of queued jobs until `stop` fires.
pub struct Canceller {
    /// JetStream context, for storing results.
    pub jetstream: async_nats::jetstream::Context,
    /// The jobs stream, looked up for queued jobs.
    pub jobs: Stream,
    /// Core subjects (cancel and result subjects).
    pub subjects: Subjects,
    /// This worker's id, on the stored result.
    pub worker_id: String,
    /// Run leases: a leased job is running, and its runner records its cancellation.
    pub leases: Leases,
}

impl Canceller {
    /// Subscribes to every cancel subject in the cancellers' queue group and handles each.
    pub async fn serve(
        self,
        nats: &async_nats::Client,
        stop: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, DurableError> {
        let subject = self.subjects.cancel_all();
        let queue = format!("{}.cancellers", self.subjects.prefix());
        let mut subscription =
            nats.queue_subscribe(subject.clone(), queue)
                .await
                .map_err(|error| DurableError::Subscribe {
                    subject,
                    source: error.into(),
                })?;
        Ok(tokio::spawn(async move {
            loop {
                tokio::select! {
                    message = subscription.next() => match message {
                        Some(message) => self.cancel(&message.subject).await,
                        None => break,
                    },
                    () = stop.cancelled() => break,
                }
            }
        }))
    }

    async fn cancel(&self, subject: &str) {
        let Some((tenant, id)) = self.subjects.parse_cancel(subject) else {
            return;
        };
        if check_token("tenant", tenant).is_err() || check_token("job id", id).is_err() {
            return;
        }
        let queued = format!("{}.jobs.*.{tenant}.{id}", self.subjects.prefix());
        let pool = match self.jobs.get_last_raw_message_by_subject(&queued).await {
            Ok(message) => pool_of(&message.subject, self.subjects.prefix()),
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => return,
            Err(error) => {
                tracing::warn!(%error, %tenant, %id, "cannot tell whether the cancelled job is queued; a queued job may still run");
                return;
            }
        };
        if self.leases.held(&format!("{tenant}.{id}")).await {
            return;
        }
        let mut result = ExecResult::failed(
            id,
            ErrorInfo::new(
                ErrorKind::Cancelled,
                "cancelled by a client before it started; it was not run",
            ),
        );
        result.status = Verdict::Cancelled;
        result.tenant = tenant.to_string();
        result.pool = pool;
        result.worker_id = self.worker_id.clone();
        let stored = self.subjects.result(tenant, id);
        match results::store(&self.jetstream, &stored, &mut result, 64 * 1024).await {
            Ok(Stored::New) => tracing::info!(%tenant, %id, "queued job cancelled"),
            Ok(Stored::AlreadyThere) => {}
            Err(error) => {
                tracing::warn!(%error, %tenant, %id, "could not record the cancellation; the job may still run");
            }
        }
    }
}

/// The pool token of a job subject `<prefix>.jobs.<pool>.<tenant>.<id>`.
fn pool_of(subject: &str, prefix: &str) -> String {
    subject
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix(".jobs."))
        .and_then(|rest| rest.split('.').next())
        .unwrap_or_default()
        .to_string()
}
