//! `openshell submit`: queue a job in durable mode and print its id (last line).

use std::process::ExitCode;

use clap::Args;

use super::exec::{ExecArgs, exit};
use crate::durable::client::DurableClient;

/// Queue a job on a durable pool; fetch its result later with `openshell result <id>`.
#[derive(Debug, Args)]
#[command(
    after_help = "Takes the same flags as `exec`. Resubmitting an --id the tenant has queued, or whose result is stored, is a no-op.\n\nExamples:\n  openshell submit --lang python -c 'print(6*7)'\n  id=$(openshell submit --id job-1 --command sleep 1 | tail -n1); openshell result \"$id\" --wait"
)]
pub struct SubmitArgs {
    #[command(flatten)]
    job: ExecArgs,
    /// Also publish the result to this NATS subject once it is stored: the tenant's inbox
    /// (`_INBOX.<tenant>.…`) or the job's result subject; workers refuse anything else.
    #[arg(long)]
    reply_to: Option<String>,
}

/// Queues the job and prints its id.
pub async fn run(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let job = &args.job;
    let request = match job.request() {
        Ok(request) => request,
        Err(error) => {
            eprintln!("openshell submit: {error:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let pool = job.pool.clone().unwrap_or_else(crate::client::default_pool);
    let nats = match job.nats.connect_as(&job.tenant).await {
        Ok(nats) => nats,
        Err(error) => {
            eprintln!("openshell submit: {error:#}");
            return Ok(ExitCode::from(exit::CLIENT_ERROR));
        }
    };
    let client = DurableClient::new(nats, &job.nats.subject_prefix);
    // A job with a stored result is never run again; say so rather than queue it for nothing.
    if let Ok(Some(stored)) = client
        .result(&job.tenant, &request.id, std::time::Duration::ZERO)
        .await
    {
        eprintln!(
            "openshell submit: job {} already has a stored result ({}); not run again (`openshell result {}`)",
            request.id, stored.status, request.id
        );
        println!("{}", request.id);
        return Ok(ExitCode::SUCCESS);
    }
    match client
        .submit(&pool, &job.tenant, &request, args.reply_to.as_deref())
        .await
    {
        Ok(submitted) => {
            if job.json {
                println!("{}", serde_json::to_string(&submitted)?);
            } else if submitted.duplicate {
                eprintln!(
                    "openshell submit: job {} was already queued; not added again",
                    submitted.id
                );
            }
            println!("{}", submitted.id);
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("openshell submit: {error}");
            Ok(ExitCode::from(exit::CLIENT_ERROR))
        }
    }
}
