//! What a container used: CPU time, peak memory, out-of-memory kills and refused forks of its
//! cgroup, read from this host's cgroup filesystem when the engine is local, else from the
//! engine's one-shot stats (CPU time and, on cgroup v1, peak memory; the stats API does not
//! report refused forks, so with a remote engine a pids-limit hit cannot be told).

use bollard::Docker;
use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::StatsOptionsBuilder;
use futures::StreamExt;

use super::cgroup::CgroupFiles;

/// How a container's usage is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Meter {
    /// From its cgroup files on this host: instant, with out-of-memory kills.
    Cgroup(CgroupFiles),
    /// From the engine's stats API (a remote engine).
    Api,
}

impl Meter {
    /// The meter for container `id`: its cgroup when its init (pid from the engine) is visible
    /// from here, else the API.
    pub async fn of(docker: &Docker, id: &str) -> Self {
        let pid = match docker.inspect_container(id, None).await {
            Ok(inspect) => inspect.state.and_then(|state| state.pid).unwrap_or(0),
            Err(_) => 0,
        };
        CgroupFiles::of_process(pid).map_or(Self::Api, Self::Cgroup)
    }

    /// Whether reading is instant (no API call).
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Cgroup(_))
    }
}

/// A container's usage so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Usage {
    /// CPU time of every process of the container, in nanoseconds.
    pub cpu_ns: Option<u64>,
    /// Peak memory of the container's cgroup in bytes (cgroup v1 engines report it; v2 do not).
    pub peak_bytes: Option<u64>,
    /// Out-of-memory kills in the container so far (cgroup files only).
    pub oom_kills: Option<u64>,
    /// Forks refused at the pids limit so far (cgroup files only).
    pub pids_refused: Option<u64>,
}

impl Usage {
    /// Reads the usage from a stats answer; a stopped container has none.
    pub fn from_stats(stats: &ContainerStatsResponse) -> Self {
        let cpu_ns = stats
            .cpu_stats
            .as_ref()
            .and_then(|cpu| cpu.cpu_usage.as_ref())
            .and_then(|usage| usage.total_usage)
            .filter(|&total| total > 0);
        let peak_bytes = stats
            .memory_stats
            .as_ref()
            .and_then(|memory| memory.max_usage)
            .filter(|&peak| peak > 0);
        Self {
            cpu_ns,
            peak_bytes,
            oom_kills: None,
            pids_refused: None,
        }
    }

    /// Whether the kernel killed a process for lack of memory since `baseline`; `None` when
    /// the meter cannot tell.
    pub fn oom_since(&self, baseline: &Usage) -> Option<bool> {
        Some(self.oom_kills? > baseline.oom_kills.unwrap_or(0))
    }

    /// Whether the kernel refused a fork at the pids limit since `baseline`; `None` when the
    /// meter cannot tell.
    pub fn pids_limit_hit_since(&self, baseline: &Usage) -> Option<bool> {
        Some(self.pids_refused? > baseline.pids_refused.unwrap_or(0))
    }

    /// The CPU time used since `baseline` was read.
    pub fn cpu_since(&self, baseline: &Usage) -> Option<std::time::Duration> {
        let used = self.cpu_ns?.saturating_sub(baseline.cpu_ns.unwrap_or(0));
        Some(std::time::Duration::from_nanos(used))
    }
}

/// The usage of container `id`, or nothing when it cannot be told (it is stopped, gone, or the
/// daemon did not answer): measurements are best effort, never a job failure.
pub(super) async fn usage(docker: &Docker, id: &str, meter: &Meter) -> Usage {
    match meter {
        Meter::Cgroup(files) => {
            let counters = files.read();
            Usage {
                cpu_ns: counters.cpu_ns,
                peak_bytes: counters.peak_bytes,
                oom_kills: counters.oom_kills,
                pids_refused: counters.pids_refused,
            }
        }
        Meter::Api => api_usage(docker, id).await,
    }
}

async fn api_usage(docker: &Docker, id: &str) -> Usage {
    let options = StatsOptionsBuilder::new()
        .stream(false)
        .one_shot(true)
        .build();
    match docker.stats(id, Some(options)).next().await {
        Some(Ok(stats)) => Usage::from_stats(&stats),
        Some(Err(error)) => {
            tracing::debug!(container = id, "no stats: {error}");
            Usage::default()
        }
        None => Usage::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_comes_from_cgroup_counters_and_zero_means_unknown() {
        let stats: ContainerStatsResponse = serde_json::from_str(
            r#"{"cpu_stats":{"cpu_usage":{"total_usage":336297553}},
                "memory_stats":{"usage":966656,"max_usage":268435456,"limit":268435456}}"#,
        )
        .unwrap();
        let usage = Usage::from_stats(&stats);
        assert_eq!(usage.cpu_ns, Some(336_297_553));
        assert_eq!(usage.peak_bytes, Some(256 << 20));
        let baseline = Usage {
            cpu_ns: Some(36_297_553),
            ..Usage::default()
        };
        assert_eq!(
            usage.cpu_since(&baseline),
            Some(std::time::Duration::from_millis(300))
        );
        let stopped: ContainerStatsResponse = serde_json::from_str(
            r#"{"cpu_stats":{"cpu_usage":{"total_usage":0}},"memory_stats":{}}"#,
        )
        .unwrap();
        assert_eq!(Usage::from_stats(&stopped), Usage::default());
        assert_eq!(usage.oom_since(&baseline), None);
        let counted = |oom_kills| Usage {
            oom_kills: Some(oom_kills),
            ..Usage::default()
        };
        assert_eq!(counted(1).oom_since(&counted(0)), Some(true));
        assert_eq!(counted(1).oom_since(&counted(1)), Some(false));
        let refused = |pids_refused| Usage {
            pids_refused: Some(pids_refused),
            ..Usage::default()
        };
        assert_eq!(refused(2).pids_limit_hit_since(&refused(0)), Some(true));
        assert_eq!(refused(2).pids_limit_hit_since(&refused(2)), Some(false));
        assert_eq!(usage.pids_limit_hit_since(&baseline), None);
    }
}
