//! A container's cgroup counters read straight from this host's cgroup filesystem (v1 or v2):
//! CPU time, peak memory, out-of-memory kills and forks refused at the pids limit, in
//! microseconds instead of the engine's stats API (which answers a second call only after its next one-second sample). Used when
//! the engine runs on this host; the backend falls back to the API otherwise.

use std::path::{Path, PathBuf};

/// Passes of [`CgroupFiles::stop_all`] before it gives up on a cgroup that keeps changing.
const STOP_PASSES: usize = 64;

/// Where the cgroup filesystem is mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Counters of one cgroup at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counters {
    /// CPU time of every process in it, in nanoseconds.
    pub cpu_ns: Option<u64>,
    /// Peak memory in bytes (v1 always; v2 from kernel 5.19).
    pub peak_bytes: Option<u64>,
    /// Processes the kernel killed for running out of memory in it.
    pub oom_kills: Option<u64>,
    /// Forks the kernel refused because the cgroup was at its pids limit (`pids.events`
    /// `max`), in v1 and v2 alike.
    pub pids_refused: Option<u64>,
}

/// The counter files of one container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CgroupFiles {
    /// cgroup v1: one directory per controller.
    V1 {
        /// The `cpuacct` directory.
        cpuacct: PathBuf,
        /// The `memory` directory.
        memory: PathBuf,
        /// The `pids` directory, when that controller is mounted.
        pids: Option<PathBuf>,
    },
    /// cgroup v2: one directory.
    V2 {
        /// The unified directory.
        dir: PathBuf,
    },
}

impl CgroupFiles {
    /// The files of the cgroup of process `pid` (a container's init, in this host's pid
    /// namespace); `None` when they cannot be read from here (a remote engine, a worker in a
    /// container of its own).
    pub fn of_process(pid: i64) -> Option<Self> {
        if pid <= 0 {
            return None;
        }
        let listing = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let files = Self::parse(&listing, Path::new(CGROUP_ROOT))?;
        files.read().cpu_ns.is_some().then_some(files)
    }

    /// The files named by a `/proc/PID/cgroup` listing, under `root`: the v1 `cpuacct` and
    /// `memory` controllers when both are there, else the v2 unified hierarchy.
    pub fn parse(listing: &str, root: &Path) -> Option<Self> {
        let (mut cpuacct, mut memory, mut pids, mut unified) = (None, None, None, None);
        for line in listing.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let relative = path.trim_start_matches('/');
            if controllers.is_empty() {
                unified = Some(root.join(relative));
            }
            let names: Vec<&str> = controllers.split(',').collect();
            if names.contains(&"cpuacct") {
                cpuacct = Some(root.join(controllers).join(relative));
            }
            if names.contains(&"memory") {
                memory = Some(root.join(controllers).join(relative));
            }
            if names.contains(&"pids") {
                pids = Some(root.join(controllers).join(relative));
            }
        }
        match (cpuacct, memory, unified) {
            (Some(cpuacct), Some(memory), _) => Some(Self::V1 {
                cpuacct,
                memory,
                pids,
            }),
            (_, _, Some(dir)) => Some(Self::V2 { dir }),
            _ => None,
        }
    }

    /// SIGSTOPs every process in the cgroup, again until a pass finds none it has not stopped
    /// (a stopped process cannot fork): what a job left cannot run on, and since nothing exits
    /// the engine has no work to do until the container is removed (SIGKILL ends stopped
    /// processes). False when the cgroup's processes could not be listed or it kept changing.
    pub fn stop_all(&self) -> bool {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let procs = match self {
            Self::V1 { cpuacct, .. } => cpuacct.join("cgroup.procs"),
            Self::V2 { dir } => dir.join("cgroup.procs"),
        };
        let mut stopped = std::collections::BTreeSet::new();
        for _ in 0..STOP_PASSES {
            let Ok(listing) = std::fs::read_to_string(&procs) else {
                return false;
            };
            let fresh: Vec<i32> = listing
                .lines()
                .filter_map(|line| line.trim().parse().ok())
                .filter(|pid| !stopped.contains(pid))
                .collect();
            if fresh.is_empty() {
                return true;
            }
            for pid in fresh {
                // A process that ended meanwhile is fine.
                let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
                stopped.insert(pid);
            }
        }
        false
    }

    /// The counters now; a counter whose file cannot be read is `None`.
    pub fn read(&self) -> Counters {
        match self {
            Self::V1 {
                cpuacct,
                memory,
                pids,
            } => Counters {
                cpu_ns: number(&cpuacct.join("cpuacct.usage")),
                peak_bytes: number(&memory.join("memory.max_usage_in_bytes")),
                oom_kills: keyed(&memory.join("memory.oom_control"), "oom_kill"),
                pids_refused: pids
                    .as_ref()
                    .and_then(|pids| keyed(&pids.join("pids.events"), "max")),
            },
            Self::V2 { dir } => Counters {
                cpu_ns: keyed(&dir.join("cpu.stat"), "usage_usec")
                    .map(|usec| usec.saturating_mul(1000)),
                peak_bytes: number(&dir.join("memory.peak")),
                oom_kills: keyed(&dir.join("memory.events"), "oom_kill"),
                pids_refused: keyed(&dir.join("pids.events"), "max"),
            },
        }
    }
}

fn number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a file of `key value` lines.
fn keyed(path: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|line| {
            line.strip_prefix(key)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "12:pids:/docker/abc\n8:memory:/docker/abc\n5:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n";

    #[test]
    fn v1_listings_name_one_directory_per_controller() {
        let files = CgroupFiles::parse(V1, Path::new("/cg")).unwrap();
        assert_eq!(
            files,
            CgroupFiles::V1 {
                cpuacct: "/cg/cpu,cpuacct/docker/abc".into(),
                memory: "/cg/memory/docker/abc".into(),
                pids: Some("/cg/pids/docker/abc".into()),
            }
        );
        assert!(CgroupFiles::parse("12:pids:/docker/abc\n", Path::new("/cg")).is_none());
    }

    #[test]
    fn v2_listings_name_the_unified_directory() {
        let files =
            CgroupFiles::parse("0::/system.slice/docker-abc.scope\n", Path::new("/cg")).unwrap();
        assert_eq!(
            files,
            CgroupFiles::V2 {
                dir: "/cg/system.slice/docker-abc.scope".into()
            }
        );
    }

    #[test]
    fn counters_come_from_the_files_and_missing_ones_are_none() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("docker/abc");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        std::fs::write(dir.join("memory.events"), "low 0\noom 2\noom_kill 1\n").unwrap();
        std::fs::write(dir.join("pids.events"), "max 3\n").unwrap();
        let files = CgroupFiles::parse("0::/docker/abc\n", root.path()).unwrap();
        assert_eq!(
            files.read(),
            Counters {
                cpu_ns: Some(1_500_000),
                peak_bytes: None,
                oom_kills: Some(1),
                pids_refused: Some(3),
            }
        );
    }

    #[test]
    #[allow(
        clippy::disallowed_methods,
        reason = "a plain test thread, no runtime to block"
    )]
    fn stop_all_stops_every_listed_process() {
        let root = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(
            root.path().join("cgroup.procs"),
            format!("{}\n", child.id()),
        )
        .unwrap();
        let files = CgroupFiles::V2 {
            dir: root.path().to_path_buf(),
        };
        assert!(files.stop_all());
        let state = || {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
            stat.rsplit_once(") ").unwrap().1.chars().next().unwrap()
        };
        for _ in 0..100 {
            if state() == 'T' {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(state(), 'T', "the process is stopped");
        child.kill().unwrap();
        child.wait().unwrap();
        let gone = CgroupFiles::V2 {
            dir: root.path().join("absent"),
        };
        assert!(!gone.stop_all(), "an unreadable list is a failure");
    }
}
