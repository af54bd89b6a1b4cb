//! `openshell bench`: load through a real NATS connection, side by side with the raw
//! operation it replaces, measured in the same run.
//!
//! A run alternates rounds: a chunk of OpenShell jobs, then (with `--baseline`) a chunk of
//! raw operations with the same concurrency, so drift in the machine affects both sides.

mod baseline;
mod load;
mod report;
mod stats;
mod workers;
mod workload;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use openshell_protocol::{ByteSize, Client, DurationMs, Limits, Subjects};

use self::baseline::{Baseline, BaselineKind, BaselineTargets};
use self::load::Shape;
use self::report::{Report, WorkerMemory};
use self::stats::Recorder;
use self::workers::Workers;
use self::workload::Workload;
use crate::cli::NatsArgs;

/// Alternating rounds per run.
const ROUNDS: u64 = 10;

/// Measure OpenShell under load, next to the raw operation it replaces.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  openshell bench --spawn-workers 1 --command true --total 5000 --concurrency 16 --baseline exec\n  openshell bench --pool docker --lang python --code 'print(1)' --total 200 --concurrency 4 --baseline docker-run --json\n  openshell bench --spawn-workers 2 --command sleep 0.1 --duration 20s --concurrency 64"
)]
pub struct BenchArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Pool to load (default: SANDBOX_BACKEND or none).
    #[arg(long, env = "OPENSHELL_POOL")]
    pool: Option<String>,
    /// Tenant to submit as.
    #[arg(long, default_value = "bench")]
    tenant: String,
    /// Language of --code.
    #[arg(long = "lang", requires = "code")]
    language: Option<String>,
    /// Code each job runs.
    #[arg(long, requires = "language", conflicts_with = "command")]
    code: Option<String>,
    /// Argv each job runs, e.g. `--command true` or `--command 'sleep 0.1'` (values are split
    /// on whitespace; use --lang/--code for anything that needs quoting).
    #[arg(long, num_args = 1..)]
    command: Option<Vec<String>>,
    /// Jobs to measure (per side).
    #[arg(long, default_value_t = 1000, conflicts_with = "duration")]
    total: u64,
    /// Measure for this long instead of a count (split across both sides).
    #[arg(long)]
    duration: Option<DurationMs>,
    /// Jobs in flight at once (closed loop), or the in-flight cap with --rate.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Fixed arrival rate in jobs per second (open loop, so queueing shows).
    #[arg(long)]
    rate: Option<f64>,
    /// Also run this raw operation, interleaved, and print OpenShell ÷ raw.
    #[arg(long, value_enum)]
    baseline: Option<BaselineKind>,
    #[command(flatten)]
    targets: BaselineTargets,
    /// Jobs run first and not measured, per side.
    #[arg(long, default_value_t = 20)]
    warmup: u64,
    /// Spawn this many local workers for the run (measures their memory and overhead).
    #[arg(long)]
    spawn_workers: Option<usize>,
    /// Slots of each spawned worker.
    #[arg(long)]
    slots: Option<usize>,
    /// Measure this already running worker (its /proc memory), repeatable.
    #[arg(long)]
    worker_pid: Vec<u32>,
    /// Wall timeout of each job.
    #[arg(long, default_value = "30s")]
    timeout: DurationMs,
    /// Memory limit of each job (default: the pool's).
    #[arg(long)]
    memory: Option<ByteSize>,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    json: bool,
}

impl BenchArgs {
    fn workload(&self) -> anyhow::Result<Workload> {
        match (&self.language, &self.code, &self.command) {
            (Some(language), Some(code), None) => Ok(Workload::Code {
                language: language.clone(),
                code: code.clone(),
            }),
            (None, None, Some(argv)) => Ok(Workload::Command(
                argv.iter()
                    .flat_map(|part| part.split_whitespace())
                    .map(str::to_string)
                    .collect(),
            )),
            _ => bail!("give --lang L --code SRC, or --command ARGV..."),
        }
    }

    fn config_json(&self, pool: &str, workers: usize) -> serde_json::Value {
        serde_json::json!({
            "pool": pool, "tenant": self.tenant, "language": self.language, "code": self.code,
            "command": self.command, "total": self.total, "duration_ms": self.duration.map(DurationMs::millis),
            "concurrency": self.concurrency, "rate": self.rate, "baseline": self.baseline,
            "warmup": self.warmup, "workers": workers, "rounds": ROUNDS, "timeout_ms": self.timeout.millis(),
        })
    }
}

/// Runs the benchmark and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    let workload = Arc::new(args.workload()?);
    let pool = args.pool.clone().unwrap_or_else(crate::cli::default_pool);
    let mut workers = match args.spawn_workers {
        Some(count) => Workers::spawn(count, &args.nats.url, args.slots).await?,
        None => Workers::existing(args.worker_pid.clone(), Vec::new()),
    };
    let client = Client::new(
        args.nats.connect().await?,
        Subjects::new(args.nats.subject_prefix.clone()),
    );
    let baseline = args
        .baseline
        .map(|kind| Baseline::new(kind, &workload, &args.targets))
        .transpose()?
        .map(Arc::new);
    let limits = Arc::new(Limits {
        timeout: Some(args.timeout),
        memory: args.memory,
        ..Limits::default()
    });
    let rss_idle = workers.rss_bytes(false);
    let run_id = format!(
        "{:x}",
        std::process::id() as u64 * 1_000_003 + Instant::now().elapsed().subsec_nanos() as u64
    );

    let openshell_op = {
        let (client, workload, limits, pool, tenant, run_id) = (
            client.clone(),
            Arc::clone(&workload),
            Arc::clone(&limits),
            pool.clone(),
            args.tenant.clone(),
            run_id.clone(),
        );
        move |index: u64| {
            let (client, workload, limits, pool, tenant) = (
                client.clone(),
                Arc::clone(&workload),
                Arc::clone(&limits),
                pool.clone(),
                tenant.clone(),
            );
            let id = format!("bench-{run_id}-{index}");
            async move {
                let request = workload.request(id, &limits);
                let started = Instant::now();
                let result = client.exec(&pool, &tenant, &request).await?;
                Ok((started.elapsed(), result.status.as_str().to_string()))
            }
        }
    };
    let baseline_op = baseline.clone().map(|baseline| {
        move |_: u64| {
            let baseline = Arc::clone(&baseline);
            async move { baseline.run_once().await }
        }
    });

    let shape = Shape {
        concurrency: args.concurrency,
        rate: args.rate,
    };
    let done = Arc::new(AtomicU64::new(0));
    load::run(
        openshell_op.clone(),
        0,
        args.warmup,
        None,
        shape,
        Arc::clone(&done),
    )
    .await;
    if let Some(op) = &baseline_op {
        load::run(op.clone(), 0, args.warmup, None, shape, Arc::clone(&done)).await;
    }
    let overhead_before = workers.overhead().await;
    done.store(0, Ordering::Relaxed);
    let progress = progress(
        Arc::clone(&done),
        args.total * if baseline.is_some() { 2 } else { 1 },
        args.json,
    );
    let (mut ours, mut theirs) = (Recorder::default(), Recorder::default());
    let chunk = args.total.div_ceil(ROUNDS);
    let slice = args.duration.map(|duration| {
        duration.as_duration() / (ROUNDS as u32 * if baseline.is_some() { 2 } else { 1 })
    });
    for round in 0..ROUNDS {
        let first = args.warmup + round * chunk;
        let count = if args.duration.is_some() {
            u64::MAX / 4
        } else {
            chunk.min(args.total.saturating_sub(round * chunk))
        };
        let until = slice.map(|slice| Instant::now() + slice);
        ours.merge(
            load::run(
                openshell_op.clone(),
                first * 1000,
                count,
                until,
                shape,
                Arc::clone(&done),
            )
            .await,
        );
        if let Some(op) = &baseline_op {
            let until = slice.map(|slice| Instant::now() + slice);
            theirs.merge(load::run(op.clone(), 0, count, until, shape, Arc::clone(&done)).await);
        }
    }
    progress.abort();
    let overhead = match (overhead_before, workers.overhead().await) {
        (Some(before), Some(after)) => Some(after.since(&before)),
        _ => None,
    };
    let memory = WorkerMemory {
        rss_idle_bytes: rss_idle,
        rss_peak_bytes: workers.rss_bytes(true),
    };
    let report = Report::new(
        ours.summary(),
        baseline.is_some().then(|| theirs.summary()),
        memory,
        overhead,
        args.config_json(&pool, workers.len()),
    );
    workers.stop().await;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        if !std::io::stderr().is_terminal() {
            eprintln!();
        }
        print!("{}", report.table());
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Prints `done/total` on stderr twice a second when it is a terminal.
fn progress(done: Arc<AtomicU64>, total: u64, quiet: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if quiet || !std::io::stderr().is_terminal() {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            eprint!(
                "\r[bench] {}/{} operations",
                done.load(Ordering::Relaxed),
                total
            );
        }
    })
}
