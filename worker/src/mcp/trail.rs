//! The audit trail of the jobs an MCP server ran: the audit events the workers published for
//! each (`received`, `started`, `finished`, or `rejected`), as they went out on
//! `<prefix>.audit.<tenant>.>`, which `accounts.conf` lets a tenant's agent read for its own
//! tenant only. Kept for the last [`KEPT_JOBS`] jobs of this server; the whole trail of a
//! tenant is in the `OPENSHELL_AUDIT` stream, for an auditor (`openshell audit export`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::watch;

/// Jobs whose trails are kept.
pub const KEPT_JOBS: usize = 64;
/// How long to wait for a job's closing event after its result arrived (`finished` goes
/// out after the result).
const CLOSING_WAIT: Duration = Duration::from_secs(2);

/// A job's events: `None` while they are still being recorded.
type Trail = watch::Receiver<Option<Vec<Value>>>;

/// Job ids oldest first, and their trails.
type Kept = (VecDeque<String>, HashMap<String, Trail>);

/// The trails of recent jobs.
#[derive(Clone, Default)]
pub struct Trails {
    kept: Arc<Mutex<Kept>>,
}

/// Audit events of one job, being recorded while it runs.
pub struct Recording {
    job_id: String,
    subscription: async_nats::Subscriber,
    done: watch::Sender<Option<Vec<Value>>>,
}

impl Trails {
    /// Starts recording the events of `job_id` of `tenant`, before its request goes out.
    pub async fn record(
        &self,
        nats: &async_nats::Client,
        prefix: &str,
        tenant: &str,
        job_id: &str,
    ) -> Option<Recording> {
        let subscription = nats
            .subscribe(format!("{prefix}.audit.{tenant}.>"))
            .await
            .map_err(|error| tracing::debug!(%error, "no audit trail for MCP jobs"))
            .ok()?;
        nats.flush().await.ok()?;
        let (done, trail) = watch::channel(None);
        let mut kept = self.kept.lock().ok()?;
        let (order, trails) = &mut *kept;
        if trails.insert(job_id.to_string(), trail).is_none() {
            order.push_back(job_id.to_string());
        }
        while order.len() > KEPT_JOBS {
            if let Some(oldest) = order.pop_front() {
                trails.remove(&oldest);
            }
        }
        Some(Recording {
            job_id: job_id.to_string(),
            subscription,
            done,
        })
    }

    /// Finishes `recording` once its job's result arrived: collects its events until the
    /// closing one (or a short wait), and keeps them.
    pub async fn keep(mut recording: Recording) {
        let deadline = tokio::time::Instant::now() + CLOSING_WAIT;
        let mut events = Vec::new();
        while let Ok(Some(message)) =
            tokio::time::timeout_at(deadline, recording.subscription.next()).await
        {
            let Ok(event) = serde_json::from_slice::<Value>(&message.payload) else {
                continue;
            };
            if event["job_id"] != recording.job_id.as_str() {
                continue;
            }
            let closing = matches!(event["event"].as_str(), Some("finished" | "rejected"));
            events.push(event);
            if closing {
                break;
            }
        }
        let _ = recording.subscription.unsubscribe().await;
        let _ = recording.done.send(Some(events));
    }

    /// The events kept for `job_id`, in the order they were published, waiting for a
    /// recording still under way; `None` for a job this server did not run (lately).
    pub async fn get(&self, job_id: &str) -> Option<Vec<Value>> {
        let mut trail = self.kept.lock().ok()?.1.get(job_id)?.clone();
        let waited = tokio::time::timeout(CLOSING_WAIT * 2, trail.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(events)) => events.clone(),
            _ => Some(Vec::new()),
        }
    }
}
