//! `openshell audit tail`: follow audit events as they are published.

use std::collections::HashSet;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use futures::StreamExt;
use openshell_protocol::AuditEvent;

use super::AUDITOR_INBOX;
use super::stored::StoredAudit;
use crate::client::NatsArgs;
use crate::durable::streams::AUDIT;

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

/// Runs `openshell audit tail`.
pub async fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    let config = args.nats.config()?;
    let connect =
        crate::nats::connect_once_watched(&config, "openshell-audit", Some(AUDITOR_INBOX));
    let (nats, violations) = connect.await.with_context(|| args.nats.hint())?;
    let any = |filter: &Option<String>| filter.clone().unwrap_or_else(|| "*".to_string());
    let subject = format!(
        "{}.audit.{}.{}.{}",
        args.nats.subject_prefix,
        any(&args.tenant),
        any(&args.pool),
        any(&args.event)
    );
    let tail = async {
        match &args.since {
            Some(since) => replay(nats, subject, since, &args).await,
            None => follow(nats, subject, &args).await,
        }
    };
    // The server drops what it refuses and reports it on the side: without this, a missing
    // grant would look like silence or a timeout.
    tokio::select! {
        outcome = tail => outcome,
        violation = violations.first() => Err(refused(&violation, config.user.as_deref(), &args)),
    }
}

/// The error for a permission the server refused, naming it and the grants `audit tail` needs.
fn refused(violation: &str, user: Option<&str>, args: &TailArgs) -> anyhow::Error {
    let prefix = &args.nats.subject_prefix;
    let user = user.map_or_else(
        || "this NATS user".to_string(),
        |user| format!("NATS user {user}"),
    );
    anyhow::anyhow!(
        "the NATS server refused a permission: {violation}. `openshell audit tail` as {user} needs to subscribe on {prefix}.audit.> and, with --since, to subscribe on {AUDITOR_INBOX}.> and publish on $JS.API.STREAM.MSG.GET.{AUDIT}; grant what is missing (see the auditor user in deploy/nats/accounts.conf)"
    )
}

/// Prints the events published on `subject` from now on (core NATS).
async fn follow(
    nats: async_nats::Client,
    subject: String,
    args: &TailArgs,
) -> anyhow::Result<ExitCode> {
    let mut subscription = nats.subscribe(subject.clone()).await?;
    eprintln!("following {subject} (Ctrl-C to stop)");
    while let Some(message) = subscription.next().await {
        print_event(&message.subject, &message.payload, None, args)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the stored events on `subject` from `since` on, then follows unless --no-follow.
///
/// Live events are subscribed to before the replay starts, so none falls between the two; a
/// live event the replay printed too (one stored after `before`) is skipped.
async fn replay(
    nats: async_nats::Client,
    subject: String,
    since: &str,
    args: &TailArgs,
) -> anyhow::Result<ExitCode> {
    let since = start_time(since)?;
    let stored = StoredAudit::new(&nats, subject.clone());
    let (before, mut live) = if args.no_follow {
        (0, None)
    } else {
        let before = stored.last_sequence().await?;
        let live = nats.subscribe(subject.clone()).await?;
        nats.flush().await?;
        (before, Some(live))
    };
    let mut replayed = HashSet::new();
    let mut next = stored.first_since(since).await?;
    while let Some(message) = next {
        print_event(&message.subject, &message.payload, Some(since), args)?;
        if live.is_some() && message.sequence > before {
            replayed.insert(message.payload.clone());
        }
        next = stored.after(message.sequence).await?;
    }
    let Some(live) = &mut live else {
        return Ok(ExitCode::SUCCESS);
    };
    eprintln!("following {subject} (Ctrl-C to stop)");
    while let Some(message) = live.next().await {
        if !replayed.remove(&message.payload) {
            print_event(&message.subject, &message.payload, None, args)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints one event as the flags ask, skipping events before `since`.
fn print_event(
    subject: &str,
    payload: &[u8],
    since: Option<DateTime<Utc>>,
    args: &TailArgs,
) -> anyhow::Result<()> {
    match serde_json::from_slice::<AuditEvent>(payload) {
        // The server may start a little early; the event's own time decides.
        Ok(event) if since.is_some_and(|since| event.timestamp < since) => {}
        Ok(event) if args.json => println!("{}", serde_json::to_string(&event)?),
        Ok(event) => println!("{}", summary(&event)),
        Err(error) => eprintln!("unreadable audit event on {subject}: {error}"),
    }
    Ok(())
}

/// `since` as an instant: RFC 3339, or a duration before now.
pub fn start_time(since: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(instant) = DateTime::parse_from_rfc3339(since) {
        return Ok(instant.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(since).map_err(|error| {
        anyhow::anyhow!(
            "--since {since:?}: {error}; give RFC 3339 (2026-01-01T00:00:00Z) or a duration such as 10m"
        )
    })?;
    Ok(Utc::now() - chrono::Duration::from_std(ago)?)
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
