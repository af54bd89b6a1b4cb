//! `openshell audit verify`: checks the stored audit trail, or an export of it offline, with
//! only the workers' public keys; see `crate::audit::verify` for what is checked.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use clap::Args;

use super::AUDITOR_INBOX;
use super::stored::StoredAudit;
use crate::audit::chain::hex;
use crate::audit::key::read_public;
use crate::audit::verify::{Ending, Problem, Report, Spot, Verifier};
use crate::client::NatsArgs;
use crate::durable::client::DurableClient;

/// Problems printed at most; the count says how many there were.
const SHOWN_PROBLEMS: usize = 20;

/// Arguments of `audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Verify this export (JSON Lines, as `openshell audit export` writes it) instead of the
    /// OPENSHELL_AUDIT stream; needs no NATS.
    #[arg(long)]
    file: Option<PathBuf>,
    /// A worker's public key to trust (SubjectPublicKeyInfo PEM, or 64 hex digits); repeat it
    /// for every key the workers sign with.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// Do not compare `finished` events with the results stored in OPENSHELL_RESULTS.
    #[arg(long)]
    no_results: bool,
}

/// Runs `openshell audit verify`.
pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut trusted = Vec::new();
    for path in &args.keys {
        trusted.push(hex(read_public(path)?.as_bytes()));
    }
    let report = match &args.file {
        Some(path) => {
            let mut verifier = Verifier::new(trusted, false);
            let file = std::fs::File::open(path)
                .with_context(|| format!("opening the export {}", path.display()))?;
            for (index, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
                let line = line.with_context(|| format!("reading {}", path.display()))?;
                if !line.is_empty() {
                    verifier.feed(index as u64 + 1, &line);
                }
            }
            let report = verifier.finish(None);
            print_summary(&report, &format!("export {}", path.display()));
            report
        }
        None => from_stream(&args, trusted).await?,
    };
    print_problems(&report.problems);
    Ok(if report.is_clean() {
        println!("OK: every chain and checkpoint verifies");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn from_stream(args: &VerifyArgs, trusted: Vec<String>) -> anyhow::Result<Report> {
    let config = args.nats.config()?;
    let connect =
        crate::nats::connect_once_watched(&config, "openshell-audit-verify", Some(AUDITOR_INBOX));
    let (nats, _violations) = connect.await.with_context(|| args.nats.hint())?;
    let prefix = &args.nats.subject_prefix;
    let stored = StoredAudit::new(&nats, format!("{prefix}.audit.>"));
    let mut verifier = Verifier::new(trusted, !args.no_results);
    let mut next = stored.from(1).await?;
    // Above 1 once anything was removed from the stream's front (by retention, or by hand).
    let first = next.as_ref().map_or(1, |message| message.sequence);
    let mut read = 0u64;
    while let Some(message) = next {
        verifier.feed(message.sequence, &message.payload);
        read += 1;
        next = stored.after(message.sequence).await?;
    }
    let mut report = verifier.finish(Some(Utc::now()));
    cuts_are_tampering_without_retention(&mut report, first);
    print_summary(
        &report,
        &format!("stream OPENSHELL_AUDIT ({read} messages from sequence {first})"),
    );
    if !args.no_results {
        let endings = std::mem::take(&mut report.endings);
        let client = DurableClient::new(nats, prefix);
        compare_results(&client, endings, &mut report.problems).await;
    }
    Ok(report)
}

/// A chain that begins after seq 1 in a stream that never lost its front was cut by hand.
fn cuts_are_tampering_without_retention(report: &mut Report, first_sequence: u64) {
    if first_sequence > 1 {
        return;
    }
    for cut in std::mem::take(&mut report.cut) {
        report.problems.push(Problem {
            spot: Spot {
                worker_id: cut.worker_id,
                chain: cut.chain,
                seq: cut.first_seq,
                job_id: None,
                position: 0,
            },
            what: format!(
                "the chain begins at seq {} but the stream has lost nothing to retention: events 1 to {} were deleted",
                cut.first_seq,
                cut.first_seq - 1
            ),
        });
    }
}

/// Compares every job's `finished` events with its stored result: the result's worker must
/// have audited the verdict and exit code it stored.
async fn compare_results(
    client: &DurableClient,
    endings: Vec<Ending>,
    problems: &mut Vec<Problem>,
) {
    let mut by_job: HashMap<(String, String), Vec<Ending>> = HashMap::new();
    for ending in endings {
        let job = ending.spot.job_id.clone().unwrap_or_default();
        by_job
            .entry((ending.tenant.clone(), job))
            .or_default()
            .push(ending);
    }
    let (mut compared, mut not_stored, mut elsewhere) = (0, 0, 0);
    let mut jobs: Vec<_> = by_job.into_iter().collect();
    jobs.sort_by_key(|(_, endings)| endings[0].spot.position);
    for ((tenant, job), endings) in jobs {
        let result = match client
            .result(&tenant, &job, std::time::Duration::ZERO)
            .await
        {
            Ok(Some(result)) => result,
            Ok(None) => {
                not_stored += 1;
                continue;
            }
            Err(error) => {
                println!("results: not compared ({error})");
                return;
            }
        };
        let mine: Vec<&Ending> = endings
            .iter()
            .filter(|ending| ending.spot.worker_id == result.worker_id)
            .collect();
        if mine.is_empty() {
            elsewhere += 1;
            continue;
        }
        compared += 1;
        let exit_code = result.exit_code;
        if !mine
            .iter()
            .any(|ending| ending.verdict == Some(result.status) && ending.exit_code == exit_code)
        {
            let ending = mine[mine.len() - 1];
            problems.push(Problem {
                spot: ending.spot.clone(),
                what: format!(
                    "the stored result says {} (exit code {exit_code:?}) but the worker audited {} (exit code {:?})",
                    result.status,
                    ending.verdict.map_or("no verdict".to_string(), |v| v.to_string()),
                    ending.exit_code
                ),
            });
        }
    }
    println!(
        "results: {compared} jobs compared with OPENSHELL_RESULTS, {not_stored} without a stored result (core jobs, or expired), {elsewhere} stored by another worker"
    );
}

fn print_summary(report: &Report, source: &str) {
    println!(
        "{source}: {} events, {} checkpoints, {} chains, {} jobs",
        report.events,
        report.checkpoints,
        report.chains.len(),
        report.jobs
    );
    for (chain, worker) in &report.chains {
        println!("  chain {chain} of worker {worker}");
    }
    for cut in &report.cut {
        println!(
            "warning: chain {} of worker {} begins at seq {}: events before it were removed by retention (or are outside the exported range)",
            cut.chain, cut.worker_id, cut.first_seq
        );
    }
    if report.unstored > 0 {
        println!(
            "warning: {} events were published but not stored (an audit stream outage), as the workers' signed checkpoints declare",
            report.unstored
        );
    }
    for chain in &report.open {
        println!(
            "note: chain {chain} is still open (its worker runs; its latest events are not yet vouched for by a checkpoint)"
        );
    }
}

fn print_problems(problems: &[Problem]) {
    let Some(first) = problems.first() else {
        return;
    };
    println!("BROKEN at {}: {}", first.spot, first.what);
    for problem in problems.iter().skip(1).take(SHOWN_PROBLEMS - 1) {
        println!("  also at {}: {}", problem.spot, problem.what);
    }
    println!("problems in all: {}", problems.len());
}
