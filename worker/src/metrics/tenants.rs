//! Jobs by tenant: opt-in and capped, so a hostile client cannot explode the series count.
//!
//! Off by default. `METRICS_TENANT_LABELS=N` gives the first `N` distinct tenants a series
//! each; every later tenant is counted under [`OTHER_TENANT`].

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// How many tenants get their own label (default 0: no tenant series).
pub const TENANT_LABELS_ENV: &str = "METRICS_TENANT_LABELS";
/// Highest accepted cap.
pub const MAX_TENANT_LABELS: usize = 1000;
/// The label of tenants past the cap.
pub const OTHER_TENANT: &str = "_other";

/// Labels of per-tenant jobs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    /// Tenant, or [`OTHER_TENANT`].
    pub tenant: String,
    /// Verdict.
    pub verdict: String,
}

/// Jobs ended, by tenant (capped) and verdict.
pub struct TenantMetrics {
    cap: usize,
    seen: Mutex<HashSet<String>>,
    /// The counter family.
    pub jobs: Family<TenantLabels, Counter>,
}

impl TenantMetrics {
    /// Per-tenant series for at most `cap` tenants (clamped to [`MAX_TENANT_LABELS`]).
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.min(MAX_TENANT_LABELS),
            seen: Mutex::default(),
            jobs: Family::default(),
        }
    }

    /// The cap from [`TENANT_LABELS_ENV`]; a value that is not a number disables the series.
    pub fn from_env() -> Self {
        let cap = match std::env::var(TENANT_LABELS_ENV) {
            Ok(value) => value.trim().parse().unwrap_or_else(|_| {
                tracing::warn!(%value, "{TENANT_LABELS_ENV} is not a number of tenants; per-tenant metrics are off");
                0
            }),
            Err(_) => 0,
        };
        Self::new(cap)
    }

    /// Registers the family, only when enabled.
    pub fn register(&self, registry: &mut Registry) {
        if self.cap > 0 {
            registry.register(
                "tenant_jobs",
                "Jobs ended by tenant (first METRICS_TENANT_LABELS tenants, then _other) and verdict",
                self.jobs.clone(),
            );
        }
    }

    /// Counts a job of `tenant` that ended with `verdict`.
    pub fn job(&self, tenant: &str, verdict: &str) {
        if self.cap == 0 {
            return;
        }
        let tenant = self.label(tenant);
        self.jobs
            .get_or_create(&TenantLabels {
                tenant,
                verdict: verdict.to_string(),
            })
            .inc();
    }

    fn label(&self, tenant: &str) -> String {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(tenant) {
            return tenant.to_string();
        }
        if seen.len() < self.cap {
            seen.insert(tenant.to_string());
            return tenant.to_string();
        }
        OTHER_TENANT.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(metrics: &TenantMetrics, tenant: &str) -> u64 {
        metrics
            .jobs
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
                verdict: "completed".to_string(),
            })
            .get()
    }

    #[test]
    fn tenants_past_the_cap_share_one_series() {
        let metrics = TenantMetrics::new(2);
        for tenant in ["a", "b", "c", "d", "a"] {
            metrics.job(tenant, "completed");
        }
        assert_eq!(count(&metrics, "a"), 2);
        assert_eq!(count(&metrics, "b"), 1);
        assert_eq!(count(&metrics, OTHER_TENANT), 2);
        assert_eq!(count(&metrics, "c"), 0);
    }

    #[test]
    fn off_by_default() {
        let metrics = TenantMetrics::new(0);
        metrics.job("a", "completed");
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(!text.contains("tenant"), "{text}");
    }
}
