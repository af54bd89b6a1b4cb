//! Prometheus metrics of a worker (prometheus-client), served by [`server`].
//!
//! Names follow Prometheus conventions: units in names, `_total` counters, bounded labels
//! (pool, backend, verdict, error kind, limit, phase: all from finite sets; the tenant label
//! only on `openshell_tenant_jobs_total`, opt-in and capped, see [`tenants`]).
//!
//! Backends that are built before a `Metrics` exists reach it through [`global`] / [`record`].
//!
//! Every series an alert in `deploy/prometheus/alerts.yml` reads exists from start-up, at 0:
//! [`Metrics::new`] creates the unlabelled and audit ones, [`Metrics::pool_started`] each
//! pool's. A counter that first appeared at 1 would show no `increase()`, so the alert would
//! miss exactly the first failures. The `process_*` series come from [`process`].

pub mod backends;
pub mod connection;
pub mod health;
pub mod network;
pub mod process;
pub mod server;
pub mod sessions;
pub mod tenants;
pub mod text_format;

use openshell_backend::{BackendEvent, MetricsSink};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use openshell_protocol::{ErrorKind, Verdict};

/// Labels of per-pool series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// Pool name.
    pub pool: String,
}

/// Labels of finished jobs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// Pool name.
    pub pool: String,
    /// Backend kind.
    pub backend: String,
    /// Verdict.
    pub verdict: String,
}

/// Labels of rejected requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// Pool name.
    pub pool: String,
    /// Error kind.
    pub kind: String,
}

/// Labels of the worker's own overhead.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Pool name.
    pub pool: String,
    /// `intake` (message received to backend start, less slot wait), `audit` (the `received`
    /// event acknowledged, part of intake) or `reply` (backend end to result published).
    pub phase: &'static str,
}

/// Labels of limits hit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// Pool name.
    pub pool: String,
    /// `timeout`, `memory`, `output` (the job was stopped) or `processes` (a fork was refused).
    pub limit: &'static str,
}

/// Every verdict a job can end with, so each pool's `jobs_total` series exist from start-up.
pub const VERDICTS: [Verdict; 10] = [
    Verdict::Completed,
    Verdict::Timeout,
    Verdict::OutOfMemory,
    Verdict::OutputLimit,
    Verdict::NetworkLimit,
    Verdict::Cancelled,
    Verdict::Rejected,
    Verdict::Expired,
    Verdict::BackendError,
    Verdict::WorkerLost,
];

/// The `limits_hit_total` limits: what a verdict tells ([`limit_of`]) and `processes`.
pub const LIMITS_HIT: [&str; 4] = ["timeout", "memory", "output", "processes"];

/// Rejection kinds whose series exist from start-up: the ones an alert reads.
pub const ALERTED_REJECTIONS: [ErrorKind; 1] = [ErrorKind::Overloaded];

/// Labels of audit publishing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditLabels {
    /// `published` or `failed`.
    pub outcome: &'static str,
}

pub(crate) fn job_buckets() -> Histogram {
    // 1 ms to about 4.4 minutes: sandbox work.
    Histogram::new(exponential_buckets(0.001, 2.0, 19))
}

fn overhead_buckets() -> Histogram {
    // 20 µs to about 0.65 s: the worker's own share.
    Histogram::new(exponential_buckets(0.000_02, 2.0, 16))
}

/// Every metric a worker exports.
pub struct Metrics {
    /// Jobs ended, by pool, backend and verdict.
    pub jobs: Family<JobLabels, Counter>,
    /// Program wall time.
    pub job_duration: Family<PoolLabels, Histogram, fn() -> Histogram>,
    /// Time a job waited for a slot.
    pub queue_wait: Family<PoolLabels, Histogram, fn() -> Histogram>,
    /// The worker's own overhead per job.
    pub overhead: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    /// Jobs running now.
    pub in_flight: Family<PoolLabels, Gauge>,
    /// Free slots now.
    pub slots_free: Family<PoolLabels, Gauge>,
    /// Requests refused before running, by error kind.
    pub rejected: Family<RejectLabels, Counter>,
    /// Audit events, by outcome.
    pub audit_events: Family<AuditLabels, Counter>,
    /// Jobs that hit a limit, by limit.
    pub limits_hit: Family<LimitLabels, Counter>,
    /// The NATS connection.
    pub nats: connection::NatsMetrics,
    /// Backend health, start latency, warm pools and SSH connections.
    pub backends: backends::BackendSeries,
    /// Jobs by tenant: opt-in, capped (`METRICS_TENANT_LABELS`).
    pub tenants: tenants::TenantMetrics,
    /// Sessions: open, lifetimes, ends, kernel restarts.
    pub sessions: sessions::SessionMetrics,
    /// Egress proxy connection attempts and bytes.
    pub network: network::NetworkMetrics,
}

/// What backends observe lands in the series of their pool: each backend gets a
/// [`openshell_backend::BackendMetrics`] handle on these metrics when it is built.
impl MetricsSink for Metrics {
    fn record(&self, pool: &str, event: BackendEvent) {
        match event {
            BackendEvent::SandboxStarted { took } => self.backends.sandbox_started(pool, took),
            BackendEvent::WarmPoolMissed => self.backends.warm_pool_missed(pool),
            BackendEvent::WarmPoolHit => self.backends.warm_pool_hit(pool),
            BackendEvent::WarmPool { target, ready } => {
                self.backends.warm_pool(pool, target, ready);
            }
            BackendEvent::LimitHit { limit } => self.limit_hit(pool, limit),
            BackendEvent::SshConnections {
                connections,
                channels,
            } => self.backends.ssh(pool, connections, channels),
            BackendEvent::SshReconnected => self.backends.ssh_reconnected(pool),
        }
    }
}

/// The limit a verdict says was hit, if any.
pub fn limit_of(verdict: &str) -> Option<&'static str> {
    match verdict {
        "timeout" => Some("timeout"),
        "out_of_memory" => Some("memory"),
        "output_limit" => Some("output"),
        _ => None,
    }
}

impl Metrics {
    /// The metrics and the registry that exports them.
    pub fn new() -> (Self, Registry) {
        let metrics = Self {
            jobs: Family::default(),
            job_duration: Family::new_with_constructor(job_buckets),
            queue_wait: Family::new_with_constructor(job_buckets),
            overhead: Family::new_with_constructor(overhead_buckets),
            in_flight: Family::default(),
            slots_free: Family::default(),
            rejected: Family::default(),
            audit_events: Family::default(),
            limits_hit: Family::default(),
            nats: connection::NatsMetrics::default(),
            backends: backends::BackendSeries::new(),
            tenants: tenants::TenantMetrics::from_env(),
            sessions: sessions::SessionMetrics::default(),
            network: network::NetworkMetrics::default(),
        };
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("openshell");
        registry.register(
            "jobs",
            "Jobs ended, by pool, backend and verdict",
            metrics.jobs.clone(),
        );
        registry.register(
            "job_duration_seconds",
            "Program wall time",
            metrics.job_duration.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Time jobs waited for a free slot",
            metrics.queue_wait.clone(),
        );
        registry.register(
            "worker_overhead_seconds",
            "Worker time per job outside the backend: intake (received to backend start, less slot wait), audit (the received event acknowledged; part of intake) and reply",
            metrics.overhead.clone(),
        );
        registry.register(
            "jobs_in_flight",
            "Jobs running now",
            metrics.in_flight.clone(),
        );
        registry.register("slots_free", "Free job slots", metrics.slots_free.clone());
        registry.register(
            "requests_rejected",
            "Requests refused before running, by error kind",
            metrics.rejected.clone(),
        );
        registry.register(
            "audit_events",
            "Audit events by outcome",
            metrics.audit_events.clone(),
        );
        registry.register(
            "limits_hit",
            "Jobs that hit a limit: stopped by timeout, memory or output, or refused a fork by processes",
            metrics.limits_hit.clone(),
        );
        metrics.nats.register(registry);
        metrics.backends.register(registry);
        metrics.sessions.register(registry);
        metrics.tenants.register(registry);
        metrics.network.register(registry);
        let build = Family::<Vec<(String, String)>, Gauge>::default();
        build
            .get_or_create(&vec![(
                "version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )])
            .set(1);
        registry.register("build_info", "Build information", build);
        for outcome in ["published", "failed"] {
            drop(metrics.audit_events.get_or_create(&AuditLabels { outcome }));
        }
        (metrics, root)
    }

    /// Creates, at their starting values, every series of pool `name` on `backend` with
    /// `slots` slots, so alerts see the first event of each (see the module docs).
    pub fn pool_started(&self, name: &str, backend: &str, slots: usize) {
        let pool = || PoolLabels {
            pool: name.to_string(),
        };
        for verdict in VERDICTS {
            drop(self.jobs.get_or_create(&JobLabels {
                pool: name.to_string(),
                backend: backend.to_string(),
                verdict: verdict.as_str().to_string(),
            }));
        }
        for limit in LIMITS_HIT {
            drop(self.limits_hit.get_or_create(&LimitLabels {
                pool: name.to_string(),
                limit,
            }));
        }
        for kind in ALERTED_REJECTIONS {
            drop(self.rejected.get_or_create(&RejectLabels {
                pool: name.to_string(),
                kind: kind.as_str().to_string(),
            }));
        }
        drop(self.job_duration.get_or_create(&pool()));
        drop(self.queue_wait.get_or_create(&pool()));
        self.slots(name, 0, slots);
        self.backends.pool_started(name, backend);
    }

    /// Records a finished job.
    pub fn job_ended(&self, pool: &str, backend: &str, verdict: &str, wall: Duration) {
        let labels = JobLabels {
            pool: pool.to_string(),
            backend: backend.to_string(),
            verdict: verdict.to_string(),
        };
        self.jobs.get_or_create(&labels).inc();
        if let Some(limit) = limit_of(verdict) {
            self.limit_hit(pool, limit);
        }
        self.job_duration
            .get_or_create(&PoolLabels {
                pool: pool.to_string(),
            })
            .observe(wall.as_secs_f64());
    }

    /// Counts a job of `pool` that hit `limit`, for limits a verdict does not tell
    /// (`processes`: the backend saw the kernel refuse a fork).
    pub fn limit_hit(&self, pool: &str, limit: &'static str) {
        self.limits_hit
            .get_or_create(&LimitLabels {
                pool: pool.to_string(),
                limit,
            })
            .inc();
    }

    /// Records a rejected request.
    pub fn rejected(&self, pool: &str, kind: &str) {
        self.rejected
            .get_or_create(&RejectLabels {
                pool: pool.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Records worker overhead of `phase`.
    pub fn overhead(&self, pool: &str, phase: &'static str, duration: Duration) {
        self.overhead
            .get_or_create(&PhaseLabels {
                pool: pool.to_string(),
                phase,
            })
            .observe(duration.as_secs_f64());
    }

    /// Records a slot wait.
    pub fn queued(&self, pool: &str, wait: Duration) {
        self.queue_wait
            .get_or_create(&PoolLabels {
                pool: pool.to_string(),
            })
            .observe(wait.as_secs_f64());
    }

    /// Records an audit publish outcome.
    pub fn audit(&self, published: bool) {
        let outcome = if published { "published" } else { "failed" };
        self.audit_events
            .get_or_create(&AuditLabels { outcome })
            .inc();
    }

    /// Sets the slot gauges of `pool`.
    pub fn slots(&self, pool: &str, in_use: usize, free: usize) {
        let labels = PoolLabels {
            pool: pool.to_string(),
        };
        self.in_flight.get_or_create(&labels).set(in_use as i64);
        self.slots_free.get_or_create(&labels).set(free as i64);
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    /// Where `verdict` sits in [`VERDICTS`]; a new verdict does not compile until listed.
    fn position(verdict: Verdict) -> usize {
        match verdict {
            Verdict::Completed => 0,
            Verdict::Timeout => 1,
            Verdict::OutOfMemory => 2,
            Verdict::OutputLimit => 3,
            Verdict::NetworkLimit => 4,
            Verdict::Cancelled => 5,
            Verdict::Rejected => 6,
            Verdict::Expired => 7,
            Verdict::BackendError => 8,
            Verdict::WorkerLost => 9,
        }
    }

    #[test]
    fn every_verdict_is_listed_once() {
        for (index, verdict) in VERDICTS.into_iter().enumerate() {
            assert_eq!(position(verdict), index, "{verdict:?}");
        }
    }

    #[test]
    fn a_started_pool_exports_its_alerted_series_at_zero() {
        let (metrics, registry) = Metrics::new();
        metrics.pool_started("p", "none", 3);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encodes");
        for line in [
            "openshell_audit_events_total{outcome=\"failed\"} 0",
            "openshell_jobs_total{pool=\"p\",backend=\"none\",verdict=\"backend_error\"} 0",
            "openshell_limits_hit_total{pool=\"p\",limit=\"memory\"} 0",
            "openshell_requests_rejected_total{pool=\"p\",kind=\"overloaded\"} 0",
            "openshell_backend_health_check_failures_total{pool=\"p\",backend=\"none\"} 0",
            "openshell_slots_free{pool=\"p\"} 3",
            "openshell_queue_wait_seconds_count{pool=\"p\"} 0",
            "# TYPE process_cpu_seconds counter",
            "# TYPE process_resident_memory_bytes gauge",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
    }
}
