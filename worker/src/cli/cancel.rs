//! `openshell cancel <id>`: stop a running job or keep a queued one from starting.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::exec::exit;
use crate::client::NatsArgs;
use crate::durable::client::DurableClient;

/// Cancel a job by id, queued (durable mode) or running (either mode).
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  openshell cancel job-1\n  openshell cancel job-1 --tenant acme"
)]
pub struct CancelArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Job id.
    id: String,
    /// Tenant the job was submitted as (env OPENSHELL_TENANT).
    #[arg(long, env = "OPENSHELL_TENANT", default_value = "default")]
    tenant: String,
    /// How long to wait for the job's stored result (`cancelled`, or its own if it had ended).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    wait: Duration,
}

/// Cancels the job and says what happened.
pub async fn run(args: CancelArgs) -> anyhow::Result<ExitCode> {
    let nats = match args.nats.connect_as(&args.tenant).await {
        Ok(nats) => nats,
        Err(error) => {
            eprintln!("openshell cancel: {error:#}");
            return Ok(ExitCode::from(exit::CLIENT_ERROR));
        }
    };
    let client = DurableClient::new(nats, &args.nats.subject_prefix);
    match client.cancel(&args.tenant, &args.id, args.wait).await {
        Ok(None) => {
            println!(
                "cancel sent for job {}; no stored result within {:?} (a core job that was running is stopped; a durable job needs a durable worker to record it)",
                args.id, args.wait
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(Some(result)) if result.status == openshell_protocol::Verdict::Cancelled => {
            println!("job {} cancelled", args.id);
            Ok(ExitCode::SUCCESS)
        }
        Ok(Some(result)) => {
            println!("job {} had already ended: {}", args.id, result.status);
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("openshell cancel: {error}");
            Ok(ExitCode::from(exit::CLIENT_ERROR))
        }
    }
}
