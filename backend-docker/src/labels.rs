//! Who owns a container: the labels every OpenShell container carries, and reading them back
//! to decide whether a container is an orphan.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Present on every container OpenShell creates; the sweep looks at no other container.
pub(super) const MANAGED: &str = "openshell.managed";
/// The backend instance (one per pool per worker process) that created the container.
pub(super) const INSTANCE: &str = "openshell.instance";
/// The worker that created it: `host-pid`, the default worker id.
pub(super) const WORKER: &str = "openshell.worker";
/// Host name of the worker.
pub(super) const HOST: &str = "openshell.host";
/// Process id of the worker on that host.
pub(super) const PID: &str = "openshell.pid";
/// The pool.
pub(super) const POOL: &str = "openshell.pool";
/// The job it was created for; empty for a warm container created ahead of any job.
pub(super) const JOB: &str = "openshell.job";
/// The tenant of that job.
pub(super) const TENANT: &str = "openshell.tenant";

/// The owner written on the containers of one backend instance.
#[derive(Debug, Clone)]
pub(super) struct Identity {
    /// Unique per backend instance.
    pub instance: String,
    /// Host name.
    pub host: String,
    /// This process.
    pub pid: u32,
    /// Pool name.
    pub pool: String,
    /// Operator labels from the settings.
    pub extra: BTreeMap<String, String>,
}

impl Identity {
    /// The identity of a new backend instance for `pool` in this process.
    pub fn new(pool: &str, extra: &BTreeMap<String, String>) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_string())
            .unwrap_or_else(|_| "localhost".to_string());
        let pid = std::process::id();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let serial = NEXT.fetch_add(1, Ordering::Relaxed);
        Self {
            instance: format!("{pid:x}{nanos:08x}{serial:x}"),
            host,
            pid,
            pool: pool.to_string(),
            extra: extra
                .iter()
                .filter(|(key, _)| !key.starts_with("openshell."))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        }
    }

    /// Labels of a container for `job` (id, tenant), or of a warm one when `None`.
    pub fn labels(&self, job: Option<(&str, &str)>) -> HashMap<String, String> {
        let (job, tenant) = job.unwrap_or_default();
        let mut labels: HashMap<String, String> = self.extra.clone().into_iter().collect();
        labels.extend(
            [
                (MANAGED, "true".to_string()),
                (INSTANCE, self.instance.clone()),
                (WORKER, format!("{}-{}", self.host, self.pid)),
                (HOST, self.host.clone()),
                (PID, self.pid.to_string()),
                (POOL, self.pool.clone()),
                (JOB, job.to_string()),
                (TENANT, tenant.to_string()),
            ]
            .map(|(key, value)| (key.to_string(), value)),
        );
        labels
    }
}

/// Who owns a container, judged from its labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// This backend instance.
    Us,
    /// A process on this host that is still running.
    LiveNeighbour,
    /// A process on this host that is gone: the container is an orphan.
    Gone,
    /// A process on another host (a shared engine): it cannot be judged from here.
    Elsewhere,
}

/// Whose container `labels` describe, with `alive` telling whether a local pid still runs.
pub(super) fn owner(
    labels: &HashMap<String, String>,
    us: &Identity,
    alive: impl Fn(u32) -> bool,
) -> Owner {
    let label = |key: &str| labels.get(key).map(String::as_str).unwrap_or_default();
    if label(INSTANCE) == us.instance {
        return Owner::Us;
    }
    if label(HOST) != us.host {
        return Owner::Elsewhere;
    }
    match label(PID).parse::<u32>() {
        Ok(pid) if pid == us.pid || alive(pid) => Owner::LiveNeighbour,
        _ => Owner::Gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_the_worker_pool_and_job_and_keep_operator_labels() {
        let extra = BTreeMap::from([
            ("team".to_string(), "ml".to_string()),
            ("openshell.job".to_string(), "forged".to_string()),
        ]);
        let us = Identity::new("py", &extra);
        let labels = us.labels(Some(("job-1", "acme")));
        assert_eq!(labels[MANAGED], "true");
        assert_eq!(labels[JOB], "job-1");
        assert_eq!(labels[TENANT], "acme");
        assert_eq!(labels[POOL], "py");
        assert_eq!(labels["team"], "ml");
        assert_eq!(
            labels[WORKER],
            format!("{}-{}", us.host, std::process::id())
        );
        assert_eq!(us.labels(None)[JOB], "");
        assert_ne!(Identity::new("py", &extra).instance, us.instance);
    }

    #[test]
    fn owners_are_judged_by_instance_then_host_then_pid() {
        let us = Identity::new("py", &BTreeMap::new());
        let mut labels = us.labels(None);
        assert_eq!(owner(&labels, &us, |_| false), Owner::Us);
        labels.insert(INSTANCE.into(), "other".into());
        labels.insert(PID.into(), "4242".into());
        assert_eq!(owner(&labels, &us, |_| true), Owner::LiveNeighbour);
        assert_eq!(owner(&labels, &us, |_| false), Owner::Gone);
        labels.insert(PID.into(), "garbage".into());
        assert_eq!(owner(&labels, &us, |_| true), Owner::Gone);
        labels.insert(HOST.into(), "elsewhere".into());
        assert_eq!(owner(&labels, &us, |_| false), Owner::Elsewhere);
    }
}
