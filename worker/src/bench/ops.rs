//! The operations a run measures, one shape for all: core request/reply, a durable job
//! (JetStream work queue, result to the bench's own inbox), or a raw baseline.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use openshell_protocol::client::REPLY_MARGIN;
use openshell_protocol::{Client, ExecResult, Limits};
use tokio::sync::oneshot;

use super::baseline::Baseline;
use super::workload::Workload;
use crate::durable::client::DurableClient;

/// The outcome of one operation: its latency and verdict (`completed`, `timeout`, `exit_N`...).
pub type Outcome = anyhow::Result<(Duration, String)>;

/// One measured operation, given its index; cheap to clone.
pub type Op = Arc<dyn Fn(u64) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// What every OpenShell operation of a run submits.
#[derive(Clone)]
pub struct Target {
    /// Pool to load.
    pub pool: String,
    /// Tenant to submit as.
    pub tenant: String,
    /// The job.
    pub workload: Arc<Workload>,
    /// Its limits.
    pub limits: Arc<Limits>,
    /// Prefix of job ids, unique per run and side (durable ids are dedup keys).
    pub id_prefix: String,
}

/// Adapts an [`Op`] to the closure the load driver takes.
pub fn drive(
    op: &Op,
) -> impl Fn(u64) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Clone + Send + Sync + use<> {
    let op = Arc::clone(op);
    move |index| op(index)
}

/// Core request/reply: latency from request to reply.
pub fn core(client: Client, target: Target) -> Op {
    Arc::new(move |index| {
        let (client, target) = (client.clone(), target.clone());
        Box::pin(async move {
            let request = target
                .workload
                .request(format!("{}-{index}", target.id_prefix), &target.limits);
            let started = Instant::now();
            let result = client.exec(&target.pool, &target.tenant, &request).await?;
            Ok((started.elapsed(), result.status.as_str().to_string()))
        })
    })
}

/// Raw baseline operations.
pub fn raw(baseline: Arc<Baseline>) -> Op {
    Arc::new(move |_| {
        let baseline = Arc::clone(&baseline);
        Box::pin(async move { baseline.run_once().await })
    })
}

/// Durable jobs: published to the jobs stream with the id as `Nats-Msg-Id` and the bench's
/// inbox as reply subject; latency from publish to result received on the inbox.
pub async fn durable(nats: async_nats::Client, prefix: &str, target: Target) -> anyhow::Result<Op> {
    let inbox = Arc::new(Inbox::listen(&nats).await?);
    let client = DurableClient::new(nats, prefix);
    Ok(Arc::new(move |index| {
        let (client, target, inbox) = (client.clone(), target.clone(), Arc::clone(&inbox));
        Box::pin(async move {
            let id = format!("{}-{index}", target.id_prefix);
            let request = target.workload.request(id.clone(), &target.limits);
            let wait = target
                .limits
                .timeout
                .map_or(Duration::from_secs(120), |timeout| timeout.as_duration())
                + REPLY_MARGIN;
            let started = Instant::now();
            let result = inbox.expect(&id);
            if let Err(error) = client
                .submit(&target.pool, &target.tenant, &request, Some(&inbox.subject))
                .await
            {
                inbox.forget(&id);
                return Err(error.into());
            }
            let result = tokio::time::timeout(wait, result).await;
            inbox.forget(&id);
            let result = result
                .with_context(|| format!("no result for durable job {id} within {wait:?}"))?
                .context("the bench's inbox subscription ended")?;
            Ok((started.elapsed(), result.status.as_str().to_string()))
        })
    }))
}

/// The bench's inbox: one subscription whose results are routed to waiters by job id.
struct Inbox {
    subject: String,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<ExecResult>>>>,
    router: tokio::task::JoinHandle<()>,
}

impl Inbox {
    async fn listen(nats: &async_nats::Client) -> anyhow::Result<Self> {
        let subject = nats.new_inbox();
        let mut results = nats
            .subscribe(subject.clone())
            .await
            .with_context(|| format!("subscribing to the bench inbox {subject}"))?;
        let waiting: Arc<Mutex<HashMap<String, oneshot::Sender<ExecResult>>>> = Arc::default();
        let routes = Arc::clone(&waiting);
        let router = tokio::spawn(async move {
            while let Some(message) = results.next().await {
                let Ok(result) = serde_json::from_slice::<ExecResult>(&message.payload) else {
                    continue;
                };
                let waiter = routes.lock().expect("inbox lock").remove(&result.id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(result);
                }
            }
        });
        Ok(Self {
            subject,
            waiting,
            router,
        })
    }

    /// Registers `id` before it is published, so a result that beats the publish ack is kept.
    fn expect(&self, id: &str) -> oneshot::Receiver<ExecResult> {
        let (sender, receiver) = oneshot::channel();
        self.waiting
            .lock()
            .expect("inbox lock")
            .insert(id.to_string(), sender);
        receiver
    }

    fn forget(&self, id: &str) {
        self.waiting.lock().expect("inbox lock").remove(id);
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.router.abort();
    }
}
