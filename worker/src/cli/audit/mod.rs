//! `openshell audit`: follow ([`tail`]), check ([`verify`]) and take away ([`export`], as
//! stored or as OCSF events, [`ocsf`]) the audit trail; [`stored`] reads the `OPENSHELL_AUDIT`
//! stream message by message.

pub mod export;
pub mod ocsf;
pub mod stored;
pub mod tail;
pub mod verify;

use std::process::ExitCode;

use clap::Subcommand;

pub use tail::TailArgs;

/// Inbox prefix of the audit commands: the stream reads are answered there, and
/// deploy/nats/accounts.conf lets the `auditor` user read it. It lies outside `_INBOX.`, so no
/// tenant's `_INBOX.<tenant>` can be it.
pub const AUDITOR_INBOX: &str = "_INBOX_AUDITOR";

/// Audit commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Follow audit events (core NATS: only events published while it runs; with --since,
    /// replayed from the OPENSHELL_AUDIT stream first).
    #[command(
        after_help = "Examples:\n  openshell audit tail\n  openshell audit tail --tenant acme --event finished --json\n  openshell audit tail --since 1h --no-follow\n  openshell audit tail --since 2026-01-01T00:00:00Z"
    )]
    Tail(TailArgs),
    /// Check the audit trail: every worker's hash chain and signed checkpoints, job order, and
    /// (from the stream) stored results. Exits non-zero naming the first broken link.
    #[command(
        after_help = "Examples:\n  openshell audit verify --key /etc/openshell/audit-key.pub.pem\n  openshell audit verify --file audit.jsonl --key w1.pub.pem --key w2.pub.pem"
    )]
    Verify(verify::VerifyArgs),
    /// Write the stored audit trail as JSON Lines (the events as stored, or as OCSF events) for
    /// a time range or a tenant, streaming.
    #[command(
        after_help = "Examples:\n  openshell audit export > audit.jsonl\n  openshell audit export --since 2026-12-01T00:00:00Z --until 2026-12-02T00:00:00Z --out day.jsonl\n  openshell audit export --tenant acme --format ocsf"
    )]
    Export(export::ExportArgs),
}

/// Runs an audit command.
pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Tail(args) => tail::run(args).await,
        AuditCommand::Verify(args) => verify::run(args).await,
        AuditCommand::Export(args) => export::run(args).await,
    }
}
