//! `openshell workers`: lists live workers from their NATS micro service `$SRV.STATS` replies.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures::StreamExt;

use crate::client::NatsArgs;
use crate::service::{SERVICE_NAME, WorkerStatus};

/// List the live workers with their pools, load and health.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  openshell workers\n  openshell workers --json --wait 2s\n  nats micro stats openshell      # the same data with the NATS CLI"
)]
pub struct WorkersArgs {
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// How long to collect replies.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// Print JSON (one array of worker statuses) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Asks every worker for its status and prints the replies; fails when none answers.
pub async fn run(args: WorkersArgs) -> anyhow::Result<ExitCode> {
    let nats = args.nats.connect().await?;
    let workers = discover(&nats, args.wait).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&workers)?);
    } else {
        print!("{}", table(&workers));
    }
    if workers.is_empty() {
        eprintln!(
            "openshell: no worker answered on $SRV.STATS.{SERVICE_NAME} within {}; is a worker running against {}?",
            humantime::format_duration(args.wait),
            args.nats.url
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Every worker's status that answers within `wait`, sorted by worker id.
pub async fn discover(
    nats: &async_nats::Client,
    wait: Duration,
) -> anyhow::Result<Vec<WorkerStatus>> {
    let inbox = nats.new_inbox();
    let mut replies = nats
        .subscribe(inbox.clone())
        .await
        .context("subscribing to a reply inbox")?;
    nats.publish_with_reply(format!("$SRV.STATS.{SERVICE_NAME}"), inbox, "".into())
        .await
        .context("asking $SRV.STATS")?;
    nats.flush()
        .await
        .context("flushing the $SRV.STATS request")?;
    let mut workers = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
        match parse_stats(&message.payload) {
            Some(status) => workers.push(status),
            None => tracing::debug!("ignored a $SRV.STATS reply that is not an OpenShell worker's"),
        }
    }
    workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
    Ok(workers)
}

/// The worker status carried in a `$SRV.STATS` reply's endpoint data.
pub fn parse_stats(payload: &[u8]) -> Option<WorkerStatus> {
    let stats: async_nats::service::Stats = serde_json::from_slice(payload).ok()?;
    stats
        .endpoints
        .into_iter()
        .filter_map(|endpoint| endpoint.data)
        .find_map(|data| serde_json::from_value(data).ok())
}

/// One line per pool of each worker.
pub fn table(workers: &[WorkerStatus]) -> String {
    let mut out = format!(
        "{:<24} {:<12} {:<8} {:<10} {:<8} {:<8}\n",
        "WORKER", "POOL", "BACKEND", "HEALTH", "LOAD", "VERSION"
    );
    for worker in workers {
        for pool in &worker.pools {
            let health = if pool.healthy { "healthy" } else { "UNHEALTHY" };
            let load = format!("{}/{}", pool.in_flight, pool.slots);
            out.push_str(&format!(
                "{:<24} {:<12} {:<8} {:<10} {:<8} {:<8}\n",
                worker.worker_id, pool.name, pool.backend, health, load, worker.version
            ));
        }
    }
    out
}
