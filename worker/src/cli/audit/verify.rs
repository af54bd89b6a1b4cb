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
    let mut results = Results::new(DurableClient::new(nats.clone(), prefix));
    let mut next = stored.from(1).await?;
    // Above 1 once anything was removed from the stream's front (by retention, or by hand).
    let first = next.as_ref().map_or(1, |message| message.sequence);
    let mut read = 0u64;
    while let Some(message) = next {
        verifier.feed(message.sequence, &message.payload);
        for ending in verifier.take_endings() {
            results.compare(ending).await;
        }
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
        results.finish(&mut report.problems);
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

/// Compares jobs' `finished` events with their stored results as they are read: the result's
/// worker must have audited the verdict and exit code it stored. A job may end more than once
/// on one worker (a run put back because its backend never started it), so a mismatch stays
/// pending until a later `finished` of the job matches; memory holds only those.
struct Results {
    client: DurableClient,
    pending: HashMap<(String, String), Problem>,
    matched: u64,
    not_stored: u64,
    elsewhere: u64,
    unavailable: Option<String>,
}

impl Results {
    fn new(client: DurableClient) -> Self {
        Self {
            client,
            pending: HashMap::new(),
            matched: 0,
            not_stored: 0,
            elsewhere: 0,
            unavailable: None,
        }
    }

    async fn compare(&mut self, ending: Ending) {
        if self.unavailable.is_some() {
            return;
        }
        let job = ending.spot.job_id.clone().unwrap_or_default();
        let result = match self
            .client
            .result(&ending.tenant, &job, std::time::Duration::ZERO)
            .await
        {
            Ok(Some(result)) => result,
            Ok(None) => {
                self.not_stored += 1;
                return;
            }
            Err(error) => {
                self.unavailable = Some(error.to_string());
                return;
            }
        };
        if result.worker_id != ending.spot.worker_id {
            self.elsewhere += 1;
            return;
        }
        let key = (ending.tenant.clone(), job);
        if ending.verdict == Some(result.status) && ending.exit_code == result.exit_code {
            self.matched += 1;
            self.pending.remove(&key);
            return;
        }
        let problem = Problem {
            what: format!(
                "the stored result says {} (exit code {:?}) but the worker audited {} (exit code {:?})",
                result.status,
                result.exit_code,
                ending
                    .verdict
                    .map_or("no verdict".to_string(), |verdict| verdict.to_string()),
                ending.exit_code
            ),
            spot: ending.spot,
        };
        self.pending.insert(key, problem);
    }

    fn finish(self, problems: &mut Vec<Problem>) {
        if let Some(error) = self.unavailable {
            println!("results: not compared ({error})");
            return;
        }
        println!(
            "results: {} jobs compared with OPENSHELL_RESULTS, {} without a stored result (core jobs, or expired), {} stored by another worker",
            self.matched + self.pending.len() as u64,
            self.not_stored,
            self.elsewhere
        );
        problems.extend(self.pending.into_values());
        problems.sort_by_key(|problem| problem.spot.position);
    }
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
