//! Worker processes a run drives: spawned by the harness or named by pid, with their resident
//! memory (from /proc) and their overhead histograms (from `/metrics`).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The worker processes of a run.
#[derive(Debug, Default)]
pub struct Workers {
    children: Vec<Child>,
    pids: Vec<u32>,
    metrics: Vec<SocketAddr>,
}

/// The histograms read from each worker: `(series, phase label)`, in [`OverheadTotals`] order.
const OVERHEAD_SERIES: [(&str, Option<&str>); 4] = [
    ("worker_overhead_seconds", Some("intake")),
    ("worker_overhead_seconds", Some("reply")),
    ("job_duration_seconds", None),
    ("worker_overhead_seconds", Some("audit")),
];

/// Totals `(sum seconds, count)` of the workers' intake, reply, backend and audit histograms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OverheadTotals([(f64, f64); 4]);

/// Mean worker overhead per job over part of a run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, PartialEq)]
pub struct Overhead {
    /// Message received to backend start, less slot wait.
    pub intake_mean_ms: f64,
    /// Backend end to result published.
    pub reply_mean_ms: f64,
    /// Time in the backend.
    pub backend_mean_ms: f64,
    /// The `received` audit event's publish until NATS (core) or JetStream (durable)
    /// acknowledged it; absent when the workers do not expose the `audit` phase.
    pub audit_mean_ms: Option<f64>,
    /// `audit_mean_ms` ÷ the side's mean end-to-end latency (filled in by the report).
    pub audit_share: Option<f64>,
}

impl OverheadTotals {
    /// The jobs counted between `before` and `self`.
    pub fn since(&self, before: &OverheadTotals) -> OverheadTotals {
        let mut delta = *self;
        for (slot, (sum, count)) in delta.0.iter_mut().enumerate() {
            *sum -= before.0[slot].0;
            *count -= before.0[slot].1;
        }
        delta
    }

    /// Adds another part of the same side's run.
    pub fn add(&mut self, other: &OverheadTotals) {
        for (slot, (sum, count)) in self.0.iter_mut().enumerate() {
            *sum += other.0[slot].0;
            *count += other.0[slot].1;
        }
    }

    /// Mean overheads per job.
    pub fn means(&self) -> Overhead {
        let mean = |slot: usize| {
            let (sum, count) = self.0[slot];
            (count > 0.0).then(|| sum / count * 1000.0)
        };
        Overhead {
            intake_mean_ms: mean(0).unwrap_or(0.0),
            reply_mean_ms: mean(1).unwrap_or(0.0),
            backend_mean_ms: mean(2).unwrap_or(0.0),
            audit_mean_ms: mean(3),
            audit_share: None,
        }
    }
}

impl Workers {
    /// Workers the harness does not own: measured by pid, overhead read from `metrics`.
    pub fn existing(pids: Vec<u32>, metrics: Vec<SocketAddr>) -> Self {
        Self {
            children: Vec::new(),
            pids,
            metrics,
        }
    }

    /// Spawns `count` `openshell worker` processes against `nats_url` (also serving the
    /// durable work queue with `durable`) and waits until each is ready.
    pub async fn spawn(
        count: usize,
        nats_url: &str,
        slots: Option<usize>,
        durable: bool,
    ) -> anyhow::Result<Self> {
        let mut workers = Self::default();
        for index in 0..count {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
                .local_addr()?
                .port();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let mut command = Command::new(std::env::current_exe()?);
            command
                .arg("worker")
                .env("NATS_URL", nats_url)
                .env("METRICS_ADDR", addr.to_string())
                .env("OPENSHELL_WORKER_ID", format!("bench-{index}"))
                .env("LOG_LEVEL", "warn,openshell_worker::cli=info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            if durable {
                command.env(crate::config::env::DURABLE, "true");
            }
            if let Some(slots) = slots {
                command.env("OPENSHELL_SLOTS", slots.to_string());
            }
            let mut child = command.spawn().context("spawning openshell worker")?;
            wait_ready(&mut child).await?;
            workers.pids.push(child.id().unwrap_or_default());
            workers.metrics.push(addr);
            workers.children.push(child);
        }
        Ok(workers)
    }

    /// Resident memory of every worker, summed, in bytes (`VmRSS`), or with `peak` the high-water mark (`VmHWM`).
    pub fn rss_bytes(&self, peak: bool) -> Option<u64> {
        let field = if peak { "VmHWM:" } else { "VmRSS:" };
        let mut total = 0;
        for pid in &self.pids {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let kib: u64 = status
                .lines()
                .find(|line| line.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            total += kib * 1024;
        }
        (!self.pids.is_empty()).then_some(total)
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.pids.len()
    }

    /// Sum and count of each overhead histogram across the workers, now.
    pub async fn overhead(&self) -> Option<OverheadTotals> {
        if self.metrics.is_empty() {
            return None;
        }
        let mut sums = [(0.0, 0.0); 4];
        for addr in &self.metrics {
            let text = scrape(*addr).await.ok()?;
            for (slot, (series, phase)) in OVERHEAD_SERIES.iter().enumerate() {
                let (sum, count) = histogram_totals(&text, series, *phase);
                sums[slot].0 += sum;
                sums[slot].1 += count;
            }
        }
        Some(OverheadTotals(sums))
    }

    /// Warm-pool hits and misses counted so far, summed over the workers and their pools.
    pub async fn warm_pool(&self) -> Option<(f64, f64)> {
        if self.metrics.is_empty() {
            return None;
        }
        let (mut hits, mut misses) = (0.0, 0.0);
        for addr in &self.metrics {
            let text = scrape(*addr).await.ok()?;
            hits += counter_total(&text, "warm_pool_hits_total");
            misses += counter_total(&text, "warm_pool_misses_total");
        }
        Some((hits, misses))
    }

    /// Stops spawned workers.
    pub async fn stop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill().await;
        }
    }
}

async fn wait_ready(child: &mut Child) -> anyhow::Result<()> {
    let stderr = child.stderr.take().context("worker stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("OpenShell worker ready") {
                return Ok::<bool, std::io::Error>(true);
            }
        }
        Ok(false)
    })
    .await;
    // Keep draining so the worker never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    match ready {
        Ok(Ok(true)) => Ok(()),
        _ => bail!(
            "the spawned worker did not report ready within 60 s; run `openshell worker` by hand to see why"
        ),
    }
}

async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// The sum of counter `name` (without the `openshell_` prefix) over its series.
fn counter_total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix("openshell_")
                .and_then(|rest| rest.strip_prefix(name))
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `(sum, count)` of histogram `name` (without the `openshell_` prefix), over the series whose
/// `phase` label matches, in Prometheus text format.
fn histogram_totals(text: &str, name: &str, phase: Option<&str>) -> (f64, f64) {
    let mut totals = (0.0, 0.0);
    for line in text.lines() {
        let Some(rest) = line
            .strip_prefix("openshell_")
            .and_then(|rest| rest.strip_prefix(name))
        else {
            continue;
        };
        if let Some(phase) = phase
            && !rest.contains(&format!("phase=\"{phase}\""))
        {
            continue;
        }
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0);
        if rest.starts_with("_sum") {
            totals.0 += value;
        } else if rest.starts_with("_count") {
            totals.1 += value;
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::{OverheadTotals, counter_total, histogram_totals};

    #[test]
    fn sums_chunks_into_means_and_leaves_a_missing_phase_out() {
        let before = OverheadTotals([(1.0, 10.0), (0.0, 0.0), (2.0, 10.0), (0.0, 0.0)]);
        let after = OverheadTotals([(1.5, 20.0), (0.1, 10.0), (3.0, 20.0), (0.0, 0.0)]);
        let mut total = OverheadTotals::default();
        total.add(&after.since(&before));
        total.add(&after.since(&before));
        let means = total.means();
        assert!((means.intake_mean_ms - 50.0).abs() < 1e-9, "{means:?}");
        assert!((means.reply_mean_ms - 10.0).abs() < 1e-9, "{means:?}");
        assert!((means.backend_mean_ms - 100.0).abs() < 1e-9, "{means:?}");
        assert_eq!(means.audit_mean_ms, None);
    }

    #[test]
    fn reads_counter_totals() {
        let text = "openshell_warm_pool_hits_total{pool=\"a\"} 3\n\
                    openshell_warm_pool_hits_total{pool=\"b\"} 4\n\
                    openshell_warm_pool_hits_total_other 9\n\
                    # HELP openshell_warm_pool_hits Jobs\n";
        assert_eq!(counter_total(text, "warm_pool_hits_total"), 7.0);
    }

    #[test]
    fn reads_histogram_totals() {
        let text = "openshell_worker_overhead_seconds_sum{pool=\"none\",phase=\"intake\"} 0.5\n\
                    openshell_worker_overhead_seconds_count{pool=\"none\",phase=\"intake\"} 10\n\
                    openshell_worker_overhead_seconds_sum{pool=\"none\",phase=\"reply\"} 0.1\n\
                    openshell_job_duration_seconds_sum{pool=\"none\"} 2.0\n\
                    openshell_job_duration_seconds_count{pool=\"none\"} 4\n";
        assert_eq!(
            histogram_totals(text, "worker_overhead_seconds", Some("intake")),
            (0.5, 10.0)
        );
        assert_eq!(
            histogram_totals(text, "job_duration_seconds", None),
            (2.0, 4.0)
        );
    }
}
