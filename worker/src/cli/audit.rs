//! `openshell audit tail`: follow audit events as they are published.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use futures::StreamExt;
use openshell_protocol::AuditEvent;

use super::NatsArgs;
use crate::durable::streams::AUDIT;

/// Audit commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Follow audit events (core NATS: only events published while it runs; with --since,
    /// replayed from the OPENSHELL_AUDIT stream first).
    #[command(
        after_help = "Examples:\n  openshell audit tail\n  openshell audit tail --tenant acme --event finished --json\n  openshell audit tail --since 1h --no-follow\n  openshell audit tail --since 2026-01-01T00:00:00Z"
    )]
    Tail(TailArgs),
}

/// Filters for `audit tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Only this pool.
    #[arg(long)]
    pool: Option<String>,
    /// Only this event type (received, rejected, started, finished).
    #[arg(long)]
    event: Option<String>,
    /// Print each event as one JSON line.
    #[arg(long)]
    json: bool,
    /// Replay stored events from this instant (RFC 3339) or this long ago (e.g. 10m, 2h),
    /// read from the OPENSHELL_AUDIT stream (durable mode).
    #[arg(long)]
    since: Option<String>,
    /// With --since: stop once the stored events are printed instead of following.
    #[arg(long, requires = "since")]
    no_follow: bool,
}

/// Runs an audit command.
pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    let AuditCommand::Tail(args) = command;
    let nats = args.nats.connect().await?;
    let any = |filter: &Option<String>| filter.clone().unwrap_or_else(|| "*".to_string());
    let subject = format!(
        "{}.audit.{}.{}.{}",
        args.nats.subject_prefix,
        any(&args.tenant),
        any(&args.pool),
        any(&args.event)
    );
    if let Some(since) = &args.since {
        return replay(nats, subject, since, &args).await;
    }
    let mut subscription = nats.subscribe(subject.clone()).await?;
    eprintln!("following {subject} (Ctrl-C to stop)");
    while let Some(message) = subscription.next().await {
        match serde_json::from_slice::<AuditEvent>(&message.payload) {
            Ok(event) if args.json => println!("{}", serde_json::to_string(&event)?),
            Ok(event) => println!("{}", summary(&event)),
            Err(error) => eprintln!("unreadable audit event on {}: {error}", message.subject),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the stored events on `subject` from `since` on, then follows unless --no-follow.
async fn replay(
    nats: async_nats::Client,
    subject: String,
    since: &str,
    args: &TailArgs,
) -> anyhow::Result<ExitCode> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};

    let since = start_time(since)?;
    let start_time = async_nats::datetime::parse_rfc3339(&since.to_rfc3339())
        .map_err(|error| anyhow::anyhow!("--since {since}: {error}"))?;
    let jetstream = async_nats::jetstream::new(nats);
    let stream = jetstream
        .get_stream(AUDIT)
        .await
        .with_context(|| format!("reading stream {AUDIT}: is a durable worker (OPENSHELL_DURABLE=true) running, so that it exists?"))?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: DeliverPolicy::ByStartTime { start_time },
            ..OrderedConfig::default()
        })
        .await
        .with_context(|| format!("creating an ordered consumer on {AUDIT} for {subject}"))?;
    let pending = consumer.cached_info().num_pending;
    if pending == 0 && args.no_follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut messages = consumer
        .messages()
        .await
        .with_context(|| format!("reading {subject} from {AUDIT}"))?;
    while let Some(message) = messages.next().await {
        let message = message.with_context(|| format!("reading {subject} from {AUDIT}"))?;
        match serde_json::from_slice::<AuditEvent>(&message.payload) {
            // The server may start a little early; the event's own time decides.
            Ok(event) if event.timestamp < since => {}
            Ok(event) if args.json => println!("{}", serde_json::to_string(&event)?),
            Ok(event) => println!("{}", summary(&event)),
            Err(error) => eprintln!("unreadable audit event on {}: {error}", message.subject),
        }
        let caught_up = message.info().is_ok_and(|info| info.pending == 0);
        if caught_up && args.no_follow {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `since` as an instant: RFC 3339, or a duration before now.
fn start_time(since: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(instant) = chrono::DateTime::parse_from_rfc3339(since) {
        return Ok(instant.with_timezone(&chrono::Utc));
    }
    let ago = humantime::parse_duration(since).map_err(|error| {
        anyhow::anyhow!(
            "--since {since:?}: {error}; give RFC 3339 (2026-01-01T00:00:00Z) or a duration such as 10m"
        )
    })?;
    Ok(chrono::Utc::now() - chrono::Duration::from_std(ago)?)
}

fn summary(event: &AuditEvent) -> String {
    let mut line = format!(
        "{} {:<8} tenant={} pool={} job={} sha256={:.12}",
        event.timestamp.to_rfc3339(),
        event.event,
        event.tenant,
        event.pool,
        event.job_id,
        event.sha256
    );
    if let Some(verdict) = event.verdict {
        line.push_str(&format!(" verdict={verdict}"));
    }
    if let Some(error) = &event.error {
        line.push_str(&format!(" error={}", error.kind));
    }
    line
}
