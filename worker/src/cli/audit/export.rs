//! `openshell audit export`: the stored audit trail as JSON Lines, each line one message's
//! payload exactly as stored (events with their chain fields, and checkpoints), so an export
//! verifies offline (`openshell audit verify --file`); or, with `--format ocsf`, each event as
//! an OCSF event (`super::ocsf`). Streams message by message: memory does not grow with the
//! trail.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use serde::Deserialize;

use super::AUDITOR_INBOX;
use super::stored::StoredAudit;
use super::tail::start_time;
use crate::client::NatsArgs;

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// JSON Lines: every message as stored.
    Jsonl,
    /// JSON Lines of OCSF 1.8.0 events (API Activity, Process Activity); no checkpoints.
    Ocsf,
}

/// Arguments of `audit export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// From this instant (RFC 3339) or this long ago (e.g. 24h); default: the oldest stored.
    #[arg(long)]
    since: Option<String>,
    /// Up to this instant (RFC 3339) or this long ago; default: now.
    #[arg(long)]
    until: Option<String>,
    /// Only this tenant's events (and no checkpoints: such an export is for review, and does
    /// not verify as chains, whose other events are left out).
    #[arg(long)]
    tenant: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// Write here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The one field the export needs of a record.
#[derive(Deserialize)]
struct Stamped {
    timestamp: DateTime<Utc>,
}

/// Runs `openshell audit export`.
pub async fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let since = args.since.as_deref().map(start_time).transpose()?;
    let until = args.until.as_deref().map(start_time).transpose()?;
    let config = args.nats.config()?;
    let connect =
        crate::nats::connect_once_watched(&config, "openshell-audit-export", Some(AUDITOR_INBOX));
    let (nats, _violations) = connect.await.with_context(|| args.nats.hint())?;
    let prefix = &args.nats.subject_prefix;
    let filter = match &args.tenant {
        Some(tenant) => format!("{prefix}.audit.{tenant}.*.*"),
        None => format!("{prefix}.audit.>"),
    };
    let stored = StoredAudit::new(&nats, filter);
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut next = match since {
        Some(since) => stored.first_since(since).await?,
        None => stored.from(1).await?,
    };
    let mut written = 0u64;
    while let Some(message) = next {
        let stamped = serde_json::from_slice::<Stamped>(&message.payload).ok();
        let at = stamped.map(|stamped| stamped.timestamp);
        if until.is_some_and(|until| at.is_some_and(|at| at > until)) {
            break;
        }
        // The server may start a little early; the record's own time decides.
        if since.is_none_or(|since| at.is_none_or(|at| at >= since)) {
            let line = match args.format {
                Format::Jsonl => Some(message.payload.to_vec()),
                Format::Ocsf => super::ocsf::event(&message.payload)
                    .map(|event| serde_json::to_vec(&event))
                    .transpose()?,
            };
            if let Some(line) = line {
                out.write_all(&line)?;
                out.write_all(b"\n")?;
                written += 1;
            }
        }
        next = stored.after(message.sequence).await?;
    }
    out.flush()?;
    eprintln!("exported {written} records");
    Ok(ExitCode::SUCCESS)
}
