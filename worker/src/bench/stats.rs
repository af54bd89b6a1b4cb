//! Latency histograms and the figures reported for one side (OpenShell or a baseline).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies and outcomes of one side of a run.
#[derive(Debug)]
pub struct Recorder {
    latencies: Histogram<u64>,
    verdicts: BTreeMap<String, u64>,
    errors: u64,
    first_error: Option<String>,
    busy: Duration,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            // Microseconds, 1 µs to 1 hour, 3 significant digits.
            latencies: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
            verdicts: BTreeMap::new(),
            errors: 0,
            first_error: None,
            busy: Duration::ZERO,
        }
    }
}

/// Reported figures of one side, as in the JSON report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Completed operations per second of time spent on this side.
    pub throughput_per_sec: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Operations measured.
    pub count: u64,
    /// Verdict counts (`completed`, `timeout`, ...; `exit_N` for baselines that exited non-zero).
    pub verdicts: BTreeMap<String, u64>,
    /// Operations that failed outright (no result, spawn failure).
    pub errors: u64,
    /// Why the first of them failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl Recorder {
    /// Records one operation's latency and verdict.
    pub fn record(&mut self, latency: Duration, verdict: &str) {
        let micros = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        let _ = self.latencies.record(micros);
        *self.verdicts.entry(verdict.to_string()).or_default() += 1;
    }

    /// Records a failed operation and, for the first, why.
    pub fn error(&mut self, why: impl std::fmt::Display) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| why.to_string());
    }

    /// Adds wall time spent running this side's operations.
    pub fn add_busy(&mut self, elapsed: Duration) {
        self.busy += elapsed;
    }

    /// Merges another recorder of the same side.
    pub fn merge(&mut self, other: Recorder) {
        let _ = self.latencies.add(&other.latencies);
        for (verdict, count) in other.verdicts {
            *self.verdicts.entry(verdict).or_default() += count;
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.busy += other.busy;
    }

    /// The figures.
    pub fn summary(&self) -> Summary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let count = self.latencies.len();
        let busy = self.busy.as_secs_f64();
        Summary {
            throughput_per_sec: if busy > 0.0 { count as f64 / busy } else { 0.0 },
            p50_ms: ms(self.latencies.value_at_quantile(0.50)),
            p90_ms: ms(self.latencies.value_at_quantile(0.90)),
            p95_ms: ms(self.latencies.value_at_quantile(0.95)),
            p99_ms: ms(self.latencies.value_at_quantile(0.99)),
            max_ms: ms(self.latencies.max()),
            mean_ms: self.latencies.mean() / 1000.0,
            count,
            verdicts: self.verdicts.clone(),
            errors: self.errors,
            first_error: self.first_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_latencies_and_throughput() {
        let mut recorder = Recorder::default();
        for ms in 1..=100 {
            recorder.record(Duration::from_millis(ms), "completed");
        }
        recorder.add_busy(Duration::from_secs(2));
        let summary = recorder.summary();
        assert_eq!(summary.count, 100);
        assert!((summary.p50_ms - 50.0).abs() < 0.5, "{summary:?}");
        assert!((summary.p95_ms - 95.0).abs() < 0.5, "{summary:?}");
        assert!((summary.max_ms - 100.0).abs() < 0.5);
        assert!((summary.throughput_per_sec - 50.0).abs() < 0.01);
        assert_eq!(summary.verdicts["completed"], 100);
    }
}
