//! Per-job cgroups of the local sandbox: memory (every process, tmpfs and shared memory
//! included), processes, CPU share and CPU time, each for the whole job.
//!
//! The host's hierarchies are found once at start-up: a cgroup v1 mount per controller where
//! the host has one, else the cgroup v2 mount with the controller enabled below it (as
//! `deploy/ssh-host/sandbox` does on SSH hosts). Each job gets a fresh cgroup in each
//! hierarchy under `openshell-local/`; bubblewrap joins them between clone and exec (the
//! child writes `0` to each `cgroup.procs`), so every process of the sandbox is counted from
//! its first instruction. When the job ends, whatever is left in them is killed and they are
//! removed.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::libc;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use openshell_protocol::Limits;

/// The parent of every job cgroup, in each hierarchy.
const PARENT: &str = "openshell-local";

/// CFS period of the CPU share, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// Processes of the sandbox itself that count against `pids.max`: bubblewrap and its pid 1.
pub(super) const SANDBOX_PROCESSES: u64 = 2;

/// Attempts, [`REMOVE_PAUSE`] apart, to empty and remove a job's cgroup.
const REMOVE_ATTEMPTS: u32 = 100;

/// Pause between two attempts to remove a job's cgroup.
const REMOVE_PAUSE: Duration = Duration::from_millis(10);

/// How long an empty job cgroup stays before a starting worker takes it for a dead worker's.
const STALE_AFTER: Duration = Duration::from_secs(600);

/// Job cgroups made by this process, for unique names.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A cgroup controller the sandbox uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Controller {
    /// Memory of all the job's processes, page cache and tmpfs included.
    Memory,
    /// Number of processes.
    Pids,
    /// CPU share (CFS quota).
    Cpu,
    /// CPU time used (v1 `cpuacct`, v2 `cpu.stat` of any cgroup).
    CpuAccounting,
}

impl Controller {
    const ALL: [Self; 4] = [Self::Memory, Self::Pids, Self::Cpu, Self::CpuAccounting];

    /// The name of its v1 mount option and v2 controller.
    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Pids => "pids",
            Self::Cpu => "cpu",
            Self::CpuAccounting => "cpuacct",
        }
    }
}

/// Where one controller's job cgroups go.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    /// 1 or 2.
    version: u8,
    /// The parent of job cgroups (`<mount>/openshell-local`).
    parent: PathBuf,
}

/// The host's cgroup hierarchies the sandbox can use, found once.
#[derive(Debug, Clone)]
pub(super) struct Hierarchies(BTreeMap<Controller, Hierarchy>);

impl Hierarchies {
    /// No cgroups at all.
    pub const NONE: Self = Self(BTreeMap::new());

    /// The same hierarchies without `controller` (what a session job's report may claim).
    pub fn without(&self, controller: Controller) -> Self {
        let mut rest = self.clone();
        rest.0.remove(&controller);
        rest
    }

    /// Every controller in a hierarchy of `version` (for tests of what depends on them).
    #[cfg(test)]
    pub fn every_controller(version: u8) -> Self {
        let parent = PathBuf::from("/sys/fs/cgroup").join(PARENT);
        Self(
            Controller::ALL
                .into_iter()
                .map(|controller| {
                    (
                        controller,
                        Hierarchy {
                            version,
                            parent: parent.clone(),
                        },
                    )
                })
                .collect(),
        )
    }

    /// The usable hierarchies of this host (none when the worker may not make cgroups).
    pub fn detect() -> Self {
        let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
            return Self::NONE;
        };
        let (mut v1, mut v2) = (BTreeMap::new(), None);
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let [_, dir, kind, options, ..] = fields[..] else {
                continue;
            };
            match kind {
                "cgroup" => {
                    for controller in Controller::ALL {
                        if options.split(',').any(|option| option == controller.name()) {
                            v1.insert(controller, PathBuf::from(dir));
                        }
                    }
                }
                "cgroup2" => v2 = Some(PathBuf::from(dir)),
                _ => {}
            }
        }
        let mut found = BTreeMap::new();
        for (controller, mount) in v1 {
            let parent = mount.join(PARENT);
            if make_dir(&parent) {
                found.insert(controller, Hierarchy { version: 1, parent });
            }
        }
        if let Some(mount) = v2 {
            found.extend(v2_hierarchies(&mount, &found));
        }
        for hierarchy in found.values() {
            remove_stale(&hierarchy.parent);
        }
        Self(found)
    }

    /// The cgroup version `controller` uses, when present.
    pub fn version(&self, controller: Controller) -> Option<u8> {
        self.0.get(&controller).map(|hierarchy| hierarchy.version)
    }

    /// Whether the memory hierarchy accounts swap, so a job's memory limit caps swap too.
    pub fn swap_capped(&self) -> bool {
        self.0.get(&Controller::Memory).is_some_and(|hierarchy| {
            let file = if hierarchy.version == 1 {
                "memory.memsw.limit_in_bytes"
            } else {
                "memory.swap.max"
            };
            hierarchy.parent.join(file).exists()
        })
    }

    /// Whether none is usable.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The v2 hierarchy for each controller v1 does not provide, enabling it below the root.
fn v2_hierarchies(
    mount: &Path,
    v1: &BTreeMap<Controller, Hierarchy>,
) -> BTreeMap<Controller, Hierarchy> {
    let mut found = BTreeMap::new();
    let Ok(available) = fs::read_to_string(mount.join("cgroup.controllers")) else {
        return found;
    };
    let parent = mount.join(PARENT);
    let wanted: Vec<Controller> = [Controller::Memory, Controller::Pids, Controller::Cpu]
        .into_iter()
        .filter(|controller| !v1.contains_key(controller))
        .filter(|controller| {
            available
                .split_whitespace()
                .any(|name| name == controller.name())
        })
        .collect();
    if !wanted.is_empty() {
        enable(mount, &wanted);
        if make_dir(&parent) {
            enable(&parent, &wanted);
            let below =
                fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
            for controller in wanted {
                if below
                    .split_whitespace()
                    .any(|name| name == controller.name())
                {
                    found.insert(
                        controller,
                        Hierarchy {
                            version: 2,
                            parent: parent.clone(),
                        },
                    );
                }
            }
        }
    }
    // cpu.stat (usage_usec) exists in every v2 cgroup, cpu controller or not.
    if !v1.contains_key(&Controller::CpuAccounting) && make_dir(&parent) {
        found.insert(Controller::CpuAccounting, Hierarchy { version: 2, parent });
    }
    found
}

/// Enables `controllers` for the children of v2 cgroup `dir` (best effort).
fn enable(dir: &Path, controllers: &[Controller]) {
    let line: Vec<String> = controllers
        .iter()
        .map(|controller| format!("+{}", controller.name()))
        .collect();
    // One at a time: a controller that cannot be enabled must not keep the others off.
    for item in line {
        let _ = fs::write(dir.join("cgroup.subtree_control"), item);
    }
}

/// Creates `dir` if missing; whether it exists now.
fn make_dir(dir: &Path) -> bool {
    match fs::create_dir(dir) {
        Ok(()) => true,
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => dir.is_dir(),
        Err(_) => false,
    }
}

/// Removes job cgroups left behind by workers that died: those empty for [`STALE_AFTER`].
/// Ownership is not judged by pid (workers in other pid namespaces share these hierarchies);
/// a cgroup made moments ago may be about to be joined, and one a job is in refuses `rmdir`.
/// Only `rmdir`, never a kill.
fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|metadata| metadata.modified())
            .is_ok_and(|modified| modified.elapsed().is_ok_and(|age| age > STALE_AFTER));
        if old && entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// A name no other worker uses, on any host sharing these hierarchies: random per process
/// (not a pid, which containers repeat), numbered per job.
fn unique_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    static PROCESS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let process = PROCESS.get_or_init(|| {
        // Randomly keyed per process, as HashMap's seeds are.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.finish()
    });
    format!("{process:016x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// One job's cgroups, with its limits written; removed (after killing what is left) on drop.
#[derive(Debug)]
pub(super) struct JobCgroup {
    /// The job's cgroup per controller, with the hierarchy's version.
    cgroups: BTreeMap<Controller, (u8, PathBuf)>,
    /// `cgroup.procs` of each distinct cgroup, for the child to join.
    procs: Vec<OwnedFd>,
}

impl JobCgroup {
    /// Fresh cgroups in every hierarchy of `hierarchies`, limited as `limits` say.
    pub fn create(hierarchies: &Hierarchies, limits: &Limits) -> io::Result<Self> {
        let name = unique_name();
        // Only what this call created is ever the job's: on failure, the drop removes those
        // and nothing that was there before.
        let mut job = Self {
            cgroups: BTreeMap::new(),
            procs: Vec::new(),
        };
        let mut made: Vec<PathBuf> = Vec::new();
        for (controller, hierarchy) in &hierarchies.0 {
            let dir = hierarchy.parent.join(&name);
            if !made.contains(&dir) {
                fs::create_dir(&dir).map_err(|error| with_path(error, "creating cgroup", &dir))?;
                made.push(dir.clone());
                job.cgroups
                    .insert(*controller, (hierarchy.version, dir.clone()));
                let procs = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(dir.join("cgroup.procs"))
                    .map_err(|error| with_path(error, "opening cgroup.procs of", &dir))?;
                job.procs.push(procs.into());
            } else {
                job.cgroups.insert(*controller, (hierarchy.version, dir));
            }
        }
        job.limit(limits)?;
        Ok(job)
    }

    /// Writes the limits of `limits` that a controller of this job enforces.
    fn limit(&self, limits: &Limits) -> io::Result<()> {
        if let (Some(memory), Some((version, dir))) =
            (limits.memory, self.cgroups.get(&Controller::Memory))
        {
            let bytes = memory.bytes().to_string();
            if *version == 1 {
                write(dir, "memory.limit_in_bytes", &bytes)?;
                // Present only where swap is accounted; equal to the limit: no swap.
                write_if_present(dir, "memory.memsw.limit_in_bytes", &bytes)?;
            } else {
                write(dir, "memory.max", &bytes)?;
                write_if_present(dir, "memory.swap.max", "0")?;
            }
        }
        if let (Some(processes), Some((_, dir))) =
            (limits.processes, self.cgroups.get(&Controller::Pids))
        {
            write(
                dir,
                "pids.max",
                &processes.saturating_add(SANDBOX_PROCESSES).to_string(),
            )?;
        }
        if let (Some(cpus), Some((version, dir))) =
            (limits.cpus, self.cgroups.get(&Controller::Cpu))
        {
            // Whole microseconds of the period; the kernel refuses a quota under 1 ms.
            let quota = ((cpus * CPU_PERIOD_US as f64).ceil() as u64).max(1000);
            if *version == 1 {
                write(dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
            } else {
                write(dir, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
            }
        }
        Ok(())
    }

    /// The distinct cgroup directories of this job.
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.cgroups.values().map(|(_, dir)| dir.clone()).collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// The `cgroup.procs` files the child writes `0` to, joining every cgroup of the job.
    pub fn procs_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// CPU time all the job's processes used so far, when accounted.
    pub fn cpu_used(&self) -> Option<Duration> {
        let (version, dir) = self.cgroups.get(&Controller::CpuAccounting)?;
        if *version == 1 {
            let nanos = fs::read_to_string(dir.join("cpuacct.usage")).ok()?;
            return nanos.trim().parse().ok().map(Duration::from_nanos);
        }
        let stat = fs::read_to_string(dir.join("cpu.stat")).ok()?;
        stat_value(&stat, "usage_usec").map(Duration::from_micros)
    }

    /// How many of the job's processes the kernel's OOM killer killed.
    pub fn oom_kills(&self) -> u64 {
        let Some((version, dir)) = self.cgroups.get(&Controller::Memory) else {
            return 0;
        };
        let file = if *version == 1 {
            "memory.oom_control"
        } else {
            "memory.events"
        };
        fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|text| stat_value(&text, "oom_kill"))
            .unwrap_or(0)
    }

    /// Whether the kernel enforces `controller` for this job.
    pub fn has(&self, controller: Controller) -> bool {
        self.cgroups.contains_key(&controller)
    }
}

impl JobCgroup {
    /// Kills whatever is left of the job and removes its cgroups.
    pub async fn remove(mut self) {
        let dirs = self.take();
        for dir in dirs {
            let mut attempts = 0;
            while let Err(error) = try_remove(&dir) {
                attempts += 1;
                if attempts == REMOVE_ATTEMPTS {
                    tracing::warn!(cgroup = %dir.display(), %error, "a job's cgroup could not be removed");
                    break;
                }
                tokio::time::sleep(REMOVE_PAUSE).await;
            }
        }
    }

    /// The cgroups still to remove; none afterwards.
    fn take(&mut self) -> Vec<PathBuf> {
        self.procs.clear();
        let dirs = self.dirs();
        self.cgroups.clear();
        dirs
    }
}

impl Drop for JobCgroup {
    /// Only when a job's future was dropped before [`JobCgroup::remove`]: a thread of its own
    /// kills what is left and removes the cgroups, off the runtime.
    fn drop(&mut self) {
        let dirs = self.take();
        if dirs.is_empty() {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("openshell-cgroup-removal".to_string())
            .spawn(move || {
                for dir in dirs {
                    for _ in 0..REMOVE_ATTEMPTS {
                        if try_remove(&dir).is_ok() {
                            break;
                        }
                        // A thread of its own, not the runtime's: it may wait.
                        #[allow(clippy::disallowed_methods)]
                        std::thread::sleep(REMOVE_PAUSE);
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "a thread to remove a job's cgroups could not start");
        }
    }
}

/// One attempt to empty cgroup `dir` and remove it: kills whatever is in it, and succeeds
/// once it is gone.
fn try_remove(dir: &Path) -> io::Result<()> {
    let pids = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    let pids: Vec<i32> = pids
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect();
    if !pids.is_empty() {
        let _ = fs::write(dir.join("cgroup.kill"), "1");
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        return Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            "processes of the job were still in it",
        ));
    }
    match fs::remove_dir(dir) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// The number after `key ` on a line of a cgroup stat file.
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(|error| with_path(error, &format!("writing {value} to"), &path))
}

fn write_if_present(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    if dir.join(file).exists() {
        write(dir, file, value)?;
    }
    Ok(())
}

fn with_path(error: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use openshell_protocol::{ByteSize, Limits};

    use super::*;

    #[test]
    fn stat_values_are_read_by_key() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(stat_value(text, "oom_kill"), Some(3));
        assert_eq!(
            stat_value("usage_usec 1500\nuser_usec 1000\n", "usage_usec"),
            Some(1500)
        );
        assert_eq!(stat_value("", "oom_kill"), None);
    }

    /// Needs root and a cgroup hierarchy; elsewhere there is nothing to check.
    #[tokio::test]
    async fn a_job_cgroup_is_limited_and_removed() {
        let hierarchies = Hierarchies::detect();
        if !nix::unistd::Uid::effective().is_root()
            || hierarchies.version(Controller::Memory).is_none()
        {
            return;
        }
        let limits = Limits {
            memory: Some(ByteSize::mib(64)),
            processes: Some(10),
            ..Limits::default()
        };
        let job = JobCgroup::create(&hierarchies, &limits).expect("job cgroup");
        let (_, memory) = job.cgroups[&Controller::Memory].clone();
        assert!(memory.is_dir());
        assert!(
            job.cpu_used().is_some() || hierarchies.version(Controller::CpuAccounting).is_none()
        );
        assert_eq!(
            std::fs::read_to_string(memory.join("memory.limit_in_bytes"))
                .or_else(|_| std::fs::read_to_string(memory.join("memory.max")))
                .unwrap_or_default()
                .trim(),
            (64u64 << 20).to_string()
        );
        assert_eq!(job.oom_kills(), 0);
        job.remove().await;
        assert!(!memory.exists(), "{} survived", memory.display());
    }
}
