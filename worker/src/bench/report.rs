//! The bench report: one JSON line, or a table.

use serde::Serialize;
use serde_json::Value;

use super::stats::Summary;
use super::workers::Overhead;

/// OpenShell ÷ baseline for each figure.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ratio {
    /// p50 ratio.
    pub p50: f64,
    /// p90 ratio.
    pub p90: f64,
    /// p95 ratio.
    pub p95: f64,
    /// p99 ratio.
    pub p99: f64,
    /// Throughput ratio.
    pub throughput: f64,
}

/// Memory of the driven workers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerMemory {
    /// Resident size before load, summed over workers.
    pub rss_idle_bytes: Option<u64>,
    /// Peak resident size under load, summed over workers.
    pub rss_peak_bytes: Option<u64>,
}

/// The whole report (stable: dashboards parse it).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// OpenShell's figures.
    pub openshell: Summary,
    /// The baseline's figures, when one ran.
    pub baseline: Option<Summary>,
    /// OpenShell ÷ baseline.
    pub ratio: Option<Ratio>,
    /// Worker memory.
    pub worker: WorkerMemory,
    /// Split of OpenShell's mean latency, when the workers' metrics were read.
    pub overhead: Option<Overhead>,
    /// The same split for the baseline's jobs, when the baseline runs on the workers (`core`).
    pub baseline_overhead: Option<Overhead>,
    /// The Docker warm pool over the measured jobs, when the workers' metrics were read and
    /// any job asked it for a sandbox.
    pub warm_pool: Option<WarmPoolHits>,
    /// How the run was made.
    pub config: Value,
}

/// Jobs that took a warm sandbox and jobs that started a cold one.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct WarmPoolHits {
    /// Jobs that took a warm sandbox.
    pub hits: u64,
    /// Jobs that started a cold one.
    pub misses: u64,
    /// hits ÷ (hits + misses).
    pub hit_rate: f64,
}

impl WarmPoolHits {
    /// The counts between two readings of `(hits, misses)`; `None` when no job asked.
    pub fn between(before: (f64, f64), after: (f64, f64)) -> Option<Self> {
        // Counters are whole numbers read as floats.
        let hits = (after.0 - before.0).max(0.0).round() as u64;
        let misses = (after.1 - before.1).max(0.0).round() as u64;
        let asked = hits + misses;
        (asked > 0).then(|| Self {
            hits,
            misses,
            hit_rate: hits as f64 / asked as f64,
        })
    }
}

impl Report {
    /// Fills in the ratios and audit shares; `overhead` is `(openshell, baseline)`.
    pub fn new(
        openshell: Summary,
        baseline: Option<Summary>,
        worker: WorkerMemory,
        overhead: (Option<Overhead>, Option<Overhead>),
        config: Value,
    ) -> Self {
        let ratio = baseline.as_ref().map(|raw| {
            let divide = |ours: f64, theirs: f64| if theirs > 0.0 { ours / theirs } else { 0.0 };
            Ratio {
                p50: divide(openshell.p50_ms, raw.p50_ms),
                p90: divide(openshell.p90_ms, raw.p90_ms),
                p95: divide(openshell.p95_ms, raw.p95_ms),
                p99: divide(openshell.p99_ms, raw.p99_ms),
                throughput: divide(openshell.throughput_per_sec, raw.throughput_per_sec),
            }
        });
        let share = |overhead: Option<Overhead>, side: Option<&Summary>| {
            overhead.map(|mut overhead| {
                overhead.audit_share = match (overhead.audit_mean_ms, side) {
                    (Some(audit), Some(side)) if side.mean_ms > 0.0 => Some(audit / side.mean_ms),
                    _ => None,
                };
                overhead
            })
        };
        Self {
            overhead: share(overhead.0, Some(&openshell)),
            baseline_overhead: share(overhead.1, baseline.as_ref()),
            openshell,
            baseline,
            ratio,
            worker,
            warm_pool: None,
            config,
        }
    }

    /// What went wrong in the run, when any measured job did not complete or got no result
    /// (on either side): the run's figures then describe failures, not the system.
    pub fn failures(&self) -> Option<String> {
        let sides = [
            ("OpenShell", Some(&self.openshell)),
            ("baseline", self.baseline.as_ref()),
        ];
        let problems: Vec<String> = sides
            .into_iter()
            .filter_map(|(name, side)| side_failures(name, side?))
            .collect();
        (!problems.is_empty()).then(|| {
            format!(
                "{}; the figures above are not a measurement of working jobs: run one job with \
                 `openshell exec` to see why",
                problems.join("; ")
            )
        })
    }

    /// A human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let baseline_name = self
            .config
            .get("baseline")
            .and_then(Value::as_str)
            .unwrap_or("baseline");
        out.push_str(&format!("{:<16}{:>14}", "", "openshell"));
        if self.baseline.is_some() {
            out.push_str(&format!("{baseline_name:>14}{:>10}", "ratio"));
        }
        out.push('\n');
        type Row = (&'static str, fn(&Summary) -> f64, fn(&Ratio) -> f64);
        let rows: [Row; 6] = [
            ("throughput/s", |s| s.throughput_per_sec, |r| r.throughput),
            ("p50 ms", |s| s.p50_ms, |r| r.p50),
            ("p90 ms", |s| s.p90_ms, |r| r.p90),
            ("p95 ms", |s| s.p95_ms, |r| r.p95),
            ("p99 ms", |s| s.p99_ms, |r| r.p99),
            ("max ms", |s| s.max_ms, |_| f64::NAN),
        ];
        for (label, figure, ratio) in rows {
            out.push_str(&format!("{label:<16}{:>14.2}", figure(&self.openshell)));
            if let (Some(raw), Some(ratios)) = (&self.baseline, &self.ratio) {
                out.push_str(&format!("{:>14.2}{:>10.2}", figure(raw), ratio(ratios)));
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "verdicts        {:?} errors {}\n",
            self.openshell.verdicts, self.openshell.errors
        ));
        if let Some(raw) = &self.baseline {
            out.push_str(&format!(
                "baseline        {:?} errors {}\n",
                raw.verdicts, raw.errors
            ));
        }
        let mib = |bytes: Option<u64>| {
            bytes.map_or("n/a".to_string(), |bytes| {
                format!("{:.1} MiB", bytes as f64 / 1048576.0)
            })
        };
        out.push_str(&format!(
            "worker rss      idle {}  peak {}\n",
            mib(self.worker.rss_idle_bytes),
            mib(self.worker.rss_peak_bytes)
        ));
        if let Some(warm) = self.warm_pool {
            out.push_str(&format!(
                "warm pool       hits {}  misses {}  hit rate {:.0}%\n",
                warm.hits,
                warm.misses,
                warm.hit_rate * 100.0
            ));
        }
        let sides = [
            ("openshell", &self.overhead, Some(&self.openshell)),
            (
                baseline_name,
                &self.baseline_overhead,
                self.baseline.as_ref(),
            ),
        ];
        for (name, overhead, side) in sides {
            if let (Some(overhead), Some(side)) = (overhead, side) {
                out.push_str(&overhead_line(name, overhead, side));
            }
        }
        out
    }
}

/// `name`'s failed operations: verdicts other than `completed`, and errors with the first cause.
fn side_failures(name: &str, side: &Summary) -> Option<String> {
    let failed: Vec<String> = side
        .verdicts
        .iter()
        .filter(|(verdict, _)| verdict.as_str() != "completed")
        .map(|(verdict, count)| format!("{count} {verdict}"))
        .collect();
    let failed_count: u64 = side
        .verdicts
        .iter()
        .filter(|(verdict, _)| verdict.as_str() != "completed")
        .map(|(_, count)| count)
        .sum();
    let mut parts = Vec::new();
    if failed_count > 0 {
        parts.push(format!(
            "{failed_count} of {} {name} jobs did not complete ({})",
            side.count,
            failed.join(", ")
        ));
    }
    if side.errors > 0 {
        let cause = side.first_error.as_deref().unwrap_or("cause unknown");
        parts.push(format!(
            "{} {name} operations got no result (first: {cause})",
            side.errors
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// One side's mean split: the workers' phases and what is left for NATS and the client.
fn overhead_line(name: &str, overhead: &Overhead, side: &Summary) -> String {
    let nats =
        side.mean_ms - overhead.intake_mean_ms - overhead.reply_mean_ms - overhead.backend_mean_ms;
    let audit = match (overhead.audit_mean_ms, overhead.audit_share) {
        (Some(audit), Some(share)) => format!("  audit {audit:.3} ({:.1}% of mean)", share * 100.0),
        _ => String::new(),
    };
    format!(
        "{name:<16}mean split ms: worker intake {:.3}  backend {:.3}  worker reply {:.3}  nats+client {:.3}{audit}\n",
        overhead.intake_mean_ms,
        overhead.backend_mean_ms,
        overhead.reply_mean_ms,
        nats.max(0.0)
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn side(verdicts: &[(&str, u64)], errors: u64, first_error: Option<&str>) -> Summary {
        let verdicts: BTreeMap<String, u64> = verdicts
            .iter()
            .map(|(verdict, count)| (verdict.to_string(), *count))
            .collect();
        Summary {
            throughput_per_sec: 1.0,
            p50_ms: 1.0,
            p90_ms: 1.0,
            p95_ms: 1.0,
            p99_ms: 1.0,
            max_ms: 1.0,
            mean_ms: 1.0,
            count: verdicts.values().sum(),
            verdicts,
            errors,
            first_error: first_error.map(str::to_string),
        }
    }

    fn report(openshell: Summary, baseline: Option<Summary>) -> Report {
        let memory = WorkerMemory {
            rss_idle_bytes: None,
            rss_peak_bytes: None,
        };
        Report::new(openshell, baseline, memory, (None, None), Value::Null)
    }

    #[test]
    fn a_clean_run_has_no_failures() {
        let clean = side(&[("completed", 10)], 0, None);
        assert_eq!(report(clean.clone(), Some(clean)).failures(), None);
    }

    #[test]
    fn failures_say_how_many_and_why_on_each_side() {
        let ours = side(
            &[("completed", 7), ("rejected", 2), ("timeout", 1)],
            3,
            Some("no result"),
        );
        let theirs = side(&[("completed", 9), ("exit_1", 1)], 0, None);
        let text = report(ours, Some(theirs)).failures().expect("failures");
        for part in [
            "3 of 10 OpenShell jobs did not complete (2 rejected, 1 timeout)",
            "3 OpenShell operations got no result (first: no result)",
            "1 of 10 baseline jobs did not complete (1 exit_1)",
        ] {
            assert!(text.contains(part), "missing `{part}` in {text}");
        }
    }
}
