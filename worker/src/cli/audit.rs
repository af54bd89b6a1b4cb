//! `openshell audit tail`: follow audit events as they are published.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use futures::StreamExt;
use openshell_protocol::AuditEvent;

use super::NatsArgs;

/// Audit commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Follow audit events (core NATS: only events published while it runs).
    #[command(
        after_help = "Examples:\n  openshell audit tail\n  openshell audit tail --tenant acme --event finished --json"
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
