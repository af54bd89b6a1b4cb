//! `openshell bench`: load through a real NATS connection, side by side with the raw
//! operation it replaces, measured in the same run.
//!
//! A run alternates rounds: a chunk of OpenShell jobs, then (with `--baseline`) a chunk of
//! raw operations with the same concurrency, so drift in the machine affects both sides.
//! With `--durable` OpenShell's side goes through the JetStream work queue, and
//! `--baseline core` puts core request/reply through the same workers beside it.

mod baseline;
mod load;
mod ops;
mod report;
mod session;
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
use self::report::{Report, WarmPoolHits, WorkerMemory};
use self::stats::Recorder;
use self::workers::{Overhead, OverheadTotals, Workers};
use self::workload::Workload;
use crate::client::NatsArgs;

/// Alternating rounds per run.
const ROUNDS: u64 = 10;

/// Measure OpenShell under load, next to the raw operation it replaces.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  openshell bench --spawn-workers 1 --command true --total 5000 --concurrency 16 --baseline exec\n  openshell bench --pool docker --lang python --code 'print(1)' --total 200 --concurrency 4 --baseline docker-run --json\n  openshell bench --spawn-workers 2 --command sleep 0.1 --duration 20s --concurrency 64\n  openshell bench --spawn-workers 1 --pool none --command true --total 2000 --concurrency 8 --durable --baseline core"
)]
pub struct BenchArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Pool to load (default: SANDBOX_BACKEND, else docker).
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
    /// Submit through the durable work queue (JetStream): latency is publish to result
    /// received; spawned workers serve durable mode.
    #[arg(long)]
    durable: bool,
    /// Also run this operation, interleaved, and print OpenShell ÷ it (`core` needs --durable).
    #[arg(long, value_enum)]
    baseline: Option<BaselineKind>,
    /// Pool of `--baseline pool`: it must be served by the same workers (a config file with
    /// both pools, OPENSHELL_CONFIG).
    #[arg(long, default_value = "none")]
    baseline_pool: String,
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
    /// Compare a call in a warm session with a fresh job on the same pool, call by call
    /// (sequential; a Python kernel for --lang python).
    #[arg(long, conflicts_with_all = ["durable", "baseline", "rate", "duration"])]
    session: bool,
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
            "concurrency": self.concurrency, "rate": self.rate, "durable": self.durable, "baseline": self.baseline,
            "baseline_pool": (self.baseline == Some(BaselineKind::Pool)).then_some(&self.baseline_pool),
            "warmup": self.warmup, "workers": workers, "rounds": ROUNDS, "timeout_ms": self.timeout.millis(),
        })
    }
}

/// Runs the benchmark and prints its report; fails (exit 1) when a measured job did not
/// complete or got no result, saying how many and why.
pub async fn run(args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    if args.baseline == Some(BaselineKind::Core) && !args.durable {
        bail!("--baseline core compares durable jobs with core ones: add --durable");
    }
    let workload = Arc::new(args.workload()?);
    let pool = args
        .pool
        .clone()
        .unwrap_or_else(crate::client::default_pool);
    let mut workers = match args.spawn_workers {
        Some(count) => Workers::spawn(count, &args.nats.url, args.slots, args.durable).await?,
        None => Workers::existing(args.worker_pid.clone(), Vec::new()),
    };
    let nats = args.nats.connect().await?;
    if args.session {
        let client = Client::new(nats, Subjects::new(args.nats.subject_prefix.clone()));
        let limits = Limits {
            timeout: Some(args.timeout),
            memory: args.memory,
            ..Limits::default()
        };
        let warmup = args.warmup;
        let outcome = session::run(
            &client,
            &pool,
            &args.tenant,
            &workload,
            &limits,
            (warmup, args.total),
            args.json,
        )
        .await;
        workers.stop().await;
        return outcome;
    }
    let target = |side: &str| ops::Target {
        pool: pool.clone(),
        tenant: args.tenant.clone(),
        workload: Arc::clone(&workload),
        limits: Arc::new(Limits {
            timeout: Some(args.timeout),
            memory: args.memory,
            ..Limits::default()
        }),
        id_prefix: format!("bench-{}-{side}", run_id()),
    };
    let core = |side: &str| {
        let subjects = Subjects::new(args.nats.subject_prefix.clone());
        ops::core(Client::new(nats.clone(), subjects), target(side))
    };
    let ours = if args.durable {
        ops::durable(nats.clone(), &args.nats.subject_prefix, target("d")).await?
    } else {
        core("c")
    };
    let theirs = match args.baseline {
        None => None,
        Some(BaselineKind::Core) => Some(core("c")),
        Some(BaselineKind::Pool) => {
            let subjects = Subjects::new(args.nats.subject_prefix.clone());
            let other = ops::Target {
                pool: args.baseline_pool.clone(),
                ..target("p")
            };
            Some(ops::core(Client::new(nats.clone(), subjects), other))
        }
        Some(kind) => Some(ops::raw(Arc::new(Baseline::new(
            kind,
            &workload,
            &args.targets,
        )?))),
    };
    let on_workers = matches!(args.baseline, Some(BaselineKind::Core | BaselineKind::Pool));
    let rss_idle = workers.rss_bytes(false);

    let shape = Shape {
        concurrency: args.concurrency,
        rate: args.rate,
    };
    let done = Arc::new(AtomicU64::new(0));
    for op in std::iter::once(&ours).chain(&theirs) {
        load::run(
            ops::drive(op),
            0,
            args.warmup,
            None,
            shape,
            Arc::clone(&done),
        )
        .await;
    }
    done.store(0, Ordering::Relaxed);
    let warm_before = workers.warm_pool().await;
    let sides = if theirs.is_some() { 2 } else { 1 };
    let progress = progress(Arc::clone(&done), args.total * sides, args.json);
    let (mut ours_rec, mut theirs_rec) = (Recorder::default(), Recorder::default());
    let (mut ours_split, mut theirs_split) = (Split::default(), Split::default());
    let chunk = args.total.div_ceil(ROUNDS);
    let slice = args
        .duration
        .map(|duration| duration.as_duration() / (ROUNDS * sides) as u32);
    for round in 0..ROUNDS {
        // Each round numbers its jobs from its own block, far above any round's count (a
        // `--duration` round has no fixed count), so job ids never repeat within a run.
        let first = (round + 1) << 40;
        let count = if args.duration.is_some() {
            u64::MAX / 4
        } else {
            chunk.min(args.total.saturating_sub(round * chunk))
        };
        let measured = |op: &ops::Op| {
            let until = slice.map(|slice| Instant::now() + slice);
            load::run(
                ops::drive(op),
                first,
                count,
                until,
                shape,
                Arc::clone(&done),
            )
        };
        let before = workers.overhead().await;
        ours_rec.merge(measured(&ours).await);
        let between = workers.overhead().await;
        ours_split.add(before, between);
        if let Some(op) = &theirs {
            theirs_rec.merge(measured(op).await);
            theirs_split.add(between, workers.overhead().await);
        }
    }
    progress.abort();
    let warm_after = workers.warm_pool().await;
    let memory = WorkerMemory {
        rss_idle_bytes: rss_idle,
        rss_peak_bytes: workers.rss_bytes(true),
    };
    let mut report = Report::new(
        ours_rec.summary(),
        theirs.is_some().then(|| theirs_rec.summary()),
        memory,
        (
            ours_split.means(),
            on_workers.then(|| theirs_split.means()).flatten(),
        ),
        args.config_json(&pool, workers.len()),
    );
    report.warm_pool = warm_before
        .zip(warm_after)
        .and_then(|(before, after)| WarmPoolHits::between(before, after));
    workers.stop().await;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        if !std::io::stderr().is_terminal() {
            eprintln!();
        }
        print!("{}", report.table());
    }
    if let Some(failures) = report.failures() {
        bail!("bench: {failures}");
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// A run id for job ids: durable ids are dedup keys and result keys, so unique across runs.
fn run_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        format!("{:x}{:x}", nanos, std::process::id())
    })
    .clone()
}

/// One side's worker histograms, summed over its chunks; `None` once a scrape failed.
struct Split(Option<OverheadTotals>);

impl Default for Split {
    fn default() -> Self {
        Self(Some(OverheadTotals::default()))
    }
}

impl Split {
    fn add(&mut self, before: Option<OverheadTotals>, after: Option<OverheadTotals>) {
        self.0 = match (self.0, before, after) {
            (Some(mut total), Some(before), Some(after)) => {
                total.add(&after.since(&before));
                Some(total)
            }
            _ => None,
        };
    }

    fn means(&self) -> Option<Overhead> {
        self.0.map(|totals| totals.means())
    }
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
