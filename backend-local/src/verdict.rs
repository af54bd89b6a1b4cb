//! How each limit is enforced, and the out-of-memory verdict.

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use openshell_protocol::{Enforcement, EnforcementReport, EnforcementStatus, LimitName, Limits};

use super::cgroup::{Controller, Hierarchies};
use super::user::RunAs;
use openshell_backend::{Capabilities, oom};

/// Peak resident memory at or above this share of the memory limit counts as "near the limit".
const NEAR_LIMIT_PERCENT: u64 = 75;

/// What enforces the limits of a backend's jobs.
#[derive(Debug)]
pub(super) struct Enforcer<'a> {
    /// Who jobs run as.
    pub run_as: RunAs,
    /// Jobs run in a bubblewrap sandbox.
    pub sandboxed: bool,
    /// The cgroups each job gets (empty without a sandbox or without usable hierarchies).
    pub cgroups: &'a Hierarchies,
}

impl Enforcer<'_> {
    /// `cgroup`, when jobs get one of `controller` (v1 or v2: the report reads the same on
    /// either host).
    fn cgroup(&self, controller: Controller) -> Option<&'static str> {
        self.cgroups.version(controller).map(|_| "cgroup")
    }
}

/// How this backend enforces `limit` under `enforcer`.
pub(super) fn mechanism(limit: LimitName, enforcer: &Enforcer<'_>) -> Enforcement {
    let sandboxed = enforcer.sandboxed;
    match limit {
        LimitName::Timeout if sandboxed => Enforcement::enforced(
            "wall-clock timer, then SIGKILL to the job's sandbox: every process of its pid namespace dies",
        ),
        LimitName::Timeout => {
            Enforcement::enforced("wall-clock timer, then SIGKILL to the job's process group")
        }
        LimitName::CpuTime => match enforcer.cgroup(Controller::CpuAccounting) {
            Some(cgroup) => Enforcement::enforced(format!(
                "CPU time of the job's {cgroup}, all its processes together, read every 100 ms: at the limit \
                 the whole sandbox is killed and the result says SIGXCPU; setrlimit(RLIMIT_CPU) also stops \
                 any one process at the limit"
            )),
            None => Enforcement::partial(
                "setrlimit(RLIMIT_CPU), rounded up to whole seconds; each process of the job gets the full amount",
            ),
        },
        LimitName::Memory => match enforcer.cgroup(Controller::Memory) {
            Some(cgroup) if enforcer.cgroups.swap_capped() => Enforcement::enforced(format!(
                "the job's memory {cgroup}: every process, its tmpfs (/tmp, /var/tmp, /dev/shm) and shared \
                 memory together, no swap; the kernel's OOM killer ends the job (out_of_memory)"
            )),
            Some(cgroup) => Enforcement::partial(format!(
                "the job's memory {cgroup}: every process, its tmpfs (/tmp, /var/tmp, /dev/shm) and shared \
                 memory together; this host does not account swap, so the job may also swap; the kernel's \
                 OOM killer ends the job (out_of_memory)"
            )),
            None => Enforcement::partial(format!(
                "setrlimit(RLIMIT_DATA): caps each process's private writable memory (heap, anonymous \
                 mmap), not the job's total, nor shared or file-backed mappings or the main stack; \
                 out_of_memory is a heuristic (the program failed and printed an allocation error, \
                 or died of SIGSEGV/SIGABRT/SIGKILL with peak RSS at least {NEAR_LIMIT_PERCENT}% of the limit)"
            )),
        },
        LimitName::Cpus => match enforcer.cgroup(Controller::Cpu) {
            Some(cgroup) => Enforcement::enforced(format!(
                "CFS quota of the job's cpu {cgroup}: cpus × 100 ms of CPU per 100 ms, all its processes together"
            )),
            None => Enforcement::not_enforced(
                "no cpu cgroup for the job (the local backend needs its bubblewrap sandbox and a cgroup \
                 hierarchy the worker may write)",
            ),
        },
        LimitName::Processes => match enforcer.cgroup(Controller::Pids) {
            Some(cgroup) => Enforcement::enforced(format!(
                "the job's pids {cgroup}: all its processes together (plus the sandbox's own two, bubblewrap \
                 and its pid 1)"
            )),
            None => processes(&enforcer.run_as),
        },
        LimitName::OpenFiles => Enforcement::enforced("setrlimit(RLIMIT_NOFILE), per process"),
        LimitName::Output if sandboxed => Enforcement::enforced(
            "output sink: capture stops at the limit and the job's sandbox (its whole pid namespace) is killed",
        ),
        LimitName::Output => Enforcement::enforced(
            "output sink: capture stops at the limit and the process group is killed",
        ),
        LimitName::Disk if sandboxed => Enforcement::partial(
            "setrlimit(RLIMIT_FSIZE) caps each file; /tmp, /var/tmp and /dev/shm are the job's own tmpfs of \
             that size (each, and counted as its memory), but the working directory under work_root has no \
             total cap",
        ),
        LimitName::Disk => {
            Enforcement::partial("setrlimit(RLIMIT_FSIZE) caps each file, not total disk")
        }
        LimitName::Network if sandboxed => Enforcement::enforced(
            "the job's own network namespace with only a loopback interface (bubblewrap --unshare-net)",
        ),
        LimitName::Network => Enforcement::not_enforced(
            "jobs share the worker host's network namespace: the local backend runs without bubblewrap",
        ),
        LimitName::Files if sandboxed => Enforcement::enforced(
            "the working directory walked by the worker after every process of the job's sandbox died: \
             entries by lstat, files opened with O_NOFOLLOW, regular files only, symlinks never followed",
        ),
        LimitName::Files => Enforcement::partial(
            "the working directory walked by the worker after the job's process group died (lstat, \
             O_NOFOLLOW, regular files only); without bubblewrap a process that left the group may \
             still change them",
        ),
        LimitName::Egress if sandboxed => Enforcement::enforced(
            "the job's own network namespace with only a loopback interface (bubblewrap --unshare-net); \
             the one way out is the worker's egress proxy on a Unix socket bound into the sandbox, which \
             checks every connection's host and port, resolves names itself and refuses non-public addresses",
        ),
        LimitName::Egress => Enforcement::not_enforced(
            "without bubblewrap jobs share the worker host's network: they cannot be held to egress rules",
        ),
    }
}

/// RLIMIT_NPROC counts every process of the job's uid, so it contains a fork bomb only when
/// jobs run as a dedicated unprivileged user; the kernel does not apply it to root at all.
fn processes(run_as: &RunAs) -> Enforcement {
    let name = &run_as.name;
    if run_as.per_job {
        Enforcement::enforced(
            "setrlimit(RLIMIT_NPROC) of the job's own uid (from [pools.NAME.local] uids), which no other \
             running job shares",
        )
    } else if run_as.uid.is_root() {
        Enforcement::not_enforced(
            "jobs run as root, which RLIMIT_NPROC does not bind; set [pools.NAME.local] user to an unprivileged user",
        )
    } else if run_as.switch {
        Enforcement::enforced(format!(
            "setrlimit(RLIMIT_NPROC) as user `{name}`; it counts every process of `{name}`, \
             so jobs sharing the user share the limit"
        ))
    } else {
        Enforcement::partial(format!(
            "setrlimit(RLIMIT_NPROC) counts every process of the worker's own user `{name}`, not only this \
             job's, and does not isolate the job from the worker; run the worker as root so jobs switch \
             to a dedicated user"
        ))
    }
}

/// The limits this backend can enforce, with how; `cpus` is present only with a cpu cgroup
/// and `network` only in a sandbox, so admission fails closed on them otherwise.
pub(super) fn capabilities(enforcer: &Enforcer<'_>) -> Capabilities {
    LimitName::ALL
        .into_iter()
        .chain([LimitName::Network, LimitName::Files, LimitName::Egress])
        .map(|limit| (limit, mechanism(limit, enforcer)))
        .filter(|(_, enforcement)| enforcement.status != EnforcementStatus::NotEnforced)
        .collect()
}

/// One entry per limit set in `limits`.
pub(super) fn report(limits: &Limits, enforcer: &Enforcer<'_>) -> EnforcementReport {
    limits
        .iter()
        .map(|(limit, _)| (limit, mechanism(limit, enforcer)))
        .collect()
}

/// The exit code and killing signal in `status`.
pub(super) fn exit_of(status: WaitStatus) -> (Option<i32>, Option<i32>) {
    match status {
        WaitStatus::Exited(_, code) => (Some(code), None),
        WaitStatus::Signaled(_, signal, _) => (None, Some(signal as i32)),
        _ => (None, None),
    }
}

/// Whether a program that ended on its own ran out of memory. RLIMIT_DATA makes allocations fail
/// instead of killing, so this is a heuristic: a memory limit was set, the program failed, and
/// either stderr shows an allocation failure or a crash signal came with peak memory near the limit.
/// `stderr` is called only when the first two hold.
pub(super) fn looks_out_of_memory(
    memory_limit: Option<u64>,
    exit: (Option<i32>, Option<i32>),
    peak_memory_bytes: u64,
    stderr: impl FnOnce() -> Vec<u8>,
) -> bool {
    let Some(limit) = memory_limit else {
        return false;
    };
    if !oom::failed(exit) {
        return false;
    }
    // Only now: fetching stderr copies it, and most jobs are not limited or do not fail.
    if oom::reports_allocation_failure(&stderr()) {
        return true;
    }
    let crashed = [Signal::SIGSEGV, Signal::SIGABRT, Signal::SIGKILL]
        .iter()
        .any(|signal| exit.1 == Some(*signal as i32));
    crashed && peak_memory_bytes.saturating_mul(100) >= limit.saturating_mul(NEAR_LIMIT_PERCENT)
}

#[cfg(test)]
mod tests {
    use nix::unistd::{Gid, Uid};

    use super::*;

    fn run_as(uid: u32, switch: bool) -> RunAs {
        RunAs {
            name: "nobody".into(),
            uid: Uid::from_raw(uid),
            gid: Gid::from_raw(uid),
            switch,
            per_job: false,
        }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn allocation_errors_on_stderr_mean_out_of_memory_only_when_limited_and_failed() {
        let limit = Some(256 * MIB);
        let python = || b"Traceback...\nMemoryError\n".to_vec();
        assert!(looks_out_of_memory(limit, (Some(1), None), 0, python));
        assert!(!looks_out_of_memory(None, (Some(1), None), 0, python));
        assert!(!looks_out_of_memory(limit, (Some(0), None), 0, python));
        let node = || {
            b"FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"
                .to_vec()
        };
        assert!(looks_out_of_memory(limit, (None, Some(6)), 0, node));
        let buffer =
            || b"RangeError: Array buffer allocation failed\n    at new ArrayBuffer".to_vec();
        assert!(looks_out_of_memory(limit, (Some(1), None), 0, buffer));
        let bash = || b"main.sh: xrealloc: cannot allocate 268046336 bytes".to_vec();
        assert!(looks_out_of_memory(limit, (Some(2), None), 0, bash));
    }

    #[test]
    fn crash_signals_count_only_near_the_limit() {
        let limit = Some(256 * MIB);
        let segv = (None, Some(Signal::SIGSEGV as i32));
        assert!(looks_out_of_memory(limit, segv, 250 * MIB, Vec::new));
        assert!(!looks_out_of_memory(limit, segv, 10 * MIB, Vec::new));
        let term = (None, Some(Signal::SIGTERM as i32));
        assert!(!looks_out_of_memory(limit, term, 250 * MIB, Vec::new));
        let oops = || b"oops".to_vec();
        assert!(!looks_out_of_memory(
            limit,
            (Some(1), None),
            250 * MIB,
            oops
        ));
    }

    static NO_CGROUPS: Hierarchies = Hierarchies::NONE;

    fn plain(run_as: RunAs) -> Enforcer<'static> {
        Enforcer {
            run_as,
            sandboxed: false,
            cgroups: &NO_CGROUPS,
        }
    }

    fn sandboxed(run_as: RunAs, cgroups: &Hierarchies) -> Enforcer<'_> {
        Enforcer {
            run_as,
            sandboxed: true,
            cgroups,
        }
    }

    #[test]
    fn cgroups_make_memory_processes_cpus_and_cpu_time_whole_job_limits() {
        let cgroups = Hierarchies::every_controller(2);
        let enforced = capabilities(&sandboxed(run_as(0, true), &cgroups));
        for limit in [LimitName::Processes, LimitName::Cpus, LimitName::CpuTime] {
            let entry = &enforced[&limit];
            assert_eq!(entry.status, EnforcementStatus::Enforced, "{limit:?}");
            assert!(entry.mechanism.contains("cgroup"), "{entry:?}");
        }
        // These made-up hierarchies have no swap accounting: memory is whole-job but may swap.
        let memory = &enforced[&LimitName::Memory];
        assert_eq!(memory.status, EnforcementStatus::Partial, "{memory:?}");
        assert!(memory.mechanism.contains("may also swap"), "{memory:?}");
        let without = capabilities(&sandboxed(run_as(65534, true), &NO_CGROUPS));
        assert_eq!(
            without[&LimitName::CpuTime].status,
            EnforcementStatus::Partial
        );
        assert_eq!(
            without[&LimitName::Memory].status,
            EnforcementStatus::Partial
        );
    }

    #[test]
    fn cpus_needs_a_cgroup_and_processes_depends_on_the_user() {
        let dedicated = capabilities(&plain(run_as(65534, true)));
        assert!(!dedicated.contains_key(&LimitName::Cpus));
        assert_eq!(
            dedicated[&LimitName::Processes].status,
            EnforcementStatus::Enforced
        );
        let own = capabilities(&plain(run_as(1000, false)));
        assert_eq!(
            own[&LimitName::Processes].status,
            EnforcementStatus::Partial
        );
        let root = capabilities(&plain(run_as(0, true)));
        assert!(!root.contains_key(&LimitName::Processes));
        // No processes, no cpus; plus files.
        assert_eq!(root.len(), LimitName::ALL.len() - 2 + 1);
    }

    #[test]
    fn network_is_a_capability_only_in_a_sandbox() {
        let plain = capabilities(&plain(run_as(65534, true)));
        assert!(!plain.contains_key(&LimitName::Network));
        let sandboxed = capabilities(&sandboxed(run_as(65534, true), &NO_CGROUPS));
        let network = &sandboxed[&LimitName::Network];
        assert_eq!(network.status, EnforcementStatus::Enforced);
        assert!(
            network.mechanism.contains("network namespace"),
            "{network:?}"
        );
        assert!(!sandboxed.contains_key(&LimitName::Cpus));
    }

    #[test]
    fn the_report_has_one_entry_per_limit_set() {
        let limits = Limits {
            cpus: Some(0.5),
            disk: Some(openshell_protocol::ByteSize::mib(1)),
            ..Limits::default()
        };
        let report = report(&limits, &plain(run_as(65534, true)));
        assert_eq!(report.len(), 2);
        assert_eq!(
            report[&LimitName::Cpus].status,
            EnforcementStatus::NotEnforced
        );
        assert_eq!(report[&LimitName::Disk].status, EnforcementStatus::Partial);
    }
}
