//! `openshell result <id>`: print a durable job's stored result, as `exec` would.

use std::process::ExitCode;

use clap::Args;
use openshell_protocol::DurationMs;

use super::exec::{exit, print_result};
use crate::client::NatsArgs;
use crate::durable::client::DurableClient;

/// Exit status when the job has no stored result (yet).
pub const NO_RESULT: u8 = 3;

/// Print the stored result of a submitted job.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: as `exec` for a stored result; 3 when there is none (yet); 69 when NATS or the results stream cannot be reached.\n\nExamples:\n  openshell result job-1\n  openshell result job-1 --wait\n  openshell result job-1 --wait 30s --json"
)]
pub struct ResultArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Job id.
    id: String,
    /// Tenant the job was submitted as (env OPENSHELL_TENANT).
    #[arg(long, env = "OPENSHELL_TENANT", default_value = "default")]
    tenant: String,
    /// Wait for the result, at most this long (default 10m when given without a value).
    #[arg(long, num_args = 0..=1, default_missing_value = "10m")]
    wait: Option<DurationMs>,
    /// Print the whole result as JSON.
    #[arg(long)]
    json: bool,
}

/// Prints the result, or says there is none.
pub async fn run(args: ResultArgs) -> anyhow::Result<ExitCode> {
    let nats = match args.nats.connect_as(&args.tenant).await {
        Ok(nats) => nats,
        Err(error) => {
            eprintln!("openshell result: {error:#}");
            return Ok(ExitCode::from(exit::CLIENT_ERROR));
        }
    };
    let client = DurableClient::new(nats, &args.nats.subject_prefix);
    let wait = args
        .wait
        .map_or(std::time::Duration::ZERO, DurationMs::as_duration);
    match client.result(&args.tenant, &args.id, wait).await {
        Ok(Some(result)) => print_result(&result, args.json),
        Ok(None) => {
            eprintln!(
                "openshell result: job {} of tenant {} has no stored result yet (queued, running, unknown, or past results_max_age)",
                args.id, args.tenant
            );
            Ok(ExitCode::from(NO_RESULT))
        }
        Err(error) => {
            eprintln!("openshell result: {error}");
            Ok(ExitCode::from(exit::CLIENT_ERROR))
        }
    }
}
