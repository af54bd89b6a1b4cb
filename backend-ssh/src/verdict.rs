//! How each limit is enforced on a host, and the out-of-memory verdict.

use openshell_protocol::{Enforcement, EnforcementReport, EnforcementStatus, LimitName, Limits};

use openshell_backend::{Capabilities, oom};

/// SIGKILL's number.
const SIGKILL: i32 = 9;

/// The cgroup controllers a host's sandbox helper found, hence what it enforces for all of a
/// job's processes together (rlimits, per process, cover the rest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cgroups {
    /// A memory controller: the job's memory, tmpfs and shared memory included.
    pub memory: bool,
    /// The memory limit also bounds swap, or the host has no swap.
    pub swap_bounded: bool,
    /// A pids controller.
    pub pids: bool,
    /// A cpu controller (CPU share).
    pub cpu: bool,
    /// CPU accounting (cpuacct, or cpu.stat on v2): CPU time of the whole job.
    pub cpu_time: bool,
}

impl Cgroups {
    /// Every controller, as a host refused unless it has them all (`require_cgroups`).
    pub const ALL: Cgroups = Cgroups {
        memory: true,
        swap_bounded: true,
        pids: true,
        cpu: true,
        cpu_time: true,
    };

    /// What both `self` and `other` have: the pool's capabilities over its hosts.
    pub fn common(self, other: Cgroups) -> Cgroups {
        Cgroups {
            memory: self.memory && other.memory,
            swap_bounded: self.swap_bounded && other.swap_bounded,
            pids: self.pids && other.pids,
            cpu: self.cpu && other.cpu,
            cpu_time: self.cpu_time && other.cpu_time,
        }
    }

    /// Memory, pids and cpu controllers all present.
    pub fn complete(self) -> bool {
        self.memory && self.pids && self.cpu && self.cpu_time
    }
}

/// How `limit` is enforced on a host whose sandbox has `cgroups`.
pub fn enforcement(limit: LimitName, cgroups: Cgroups) -> Enforcement {
    match limit {
        LimitName::Timeout => Enforcement::enforced(
            "worker-side wall-clock timer, then the host's sandbox helper, asked from a second SSH channel, \
             kills the job's whole pid namespace; the helper itself kills it at the timeout + 10 s if the \
             worker is gone",
        ),
        LimitName::CpuTime if cgroups.cpu_time => Enforcement::enforced(
            "CPU time of the job's own cgroup (all its processes together), read every 0.1 s by the host's \
             sandbox helper, which kills the whole job when it is used up (reported as SIGXCPU); plus \
             prlimit RLIMIT_CPU per process, rounded up to whole seconds",
        ),
        LimitName::CpuTime => Enforcement::partial(
            "prlimit RLIMIT_CPU on the host, rounded up to whole seconds; each process of the job gets the \
             full amount (the host has no CPU accounting cgroup)",
        ),
        LimitName::Memory if cgroups.memory && cgroups.swap_bounded => Enforcement::enforced(
            "memory limit of the job's own cgroup on the host (all its processes, tmpfs and shared memory \
             included, no swap); out_of_memory when the kernel's OOM killer ended the job",
        ),
        LimitName::Memory if cgroups.memory => Enforcement::partial(
            "memory limit of the job's own cgroup on the host (all its processes, tmpfs and shared memory \
             included); the host has swap but no swap accounting, so the job may also swap",
        ),
        LimitName::Memory => Enforcement::partial(
            "rlimit only (the host has no memory cgroup): prlimit RLIMIT_AS caps each process's address \
             space, not the job's total; out_of_memory is a heuristic from the program's stderr; V8 (node) \
             cannot start under it",
        ),
        LimitName::Cpus if cgroups.cpu => {
            Enforcement::enforced("CPU quota of the job's own cgroup on the host")
        }
        LimitName::Cpus => Enforcement::not_enforced(
            "the host has no cpu cgroup controller, and rlimits cannot limit CPU share; see \
             deploy/ssh-host/README.md",
        ),
        LimitName::Processes if cgroups.pids => Enforcement::enforced(
            "pids limit of the job's own cgroup on the host, counting threads",
        ),
        LimitName::Processes => Enforcement::enforced(
            "prlimit RLIMIT_NPROC of the job's own uid, which no other running job shares",
        ),
        LimitName::OpenFiles => {
            Enforcement::enforced("prlimit RLIMIT_NOFILE on the host, per process")
        }
        LimitName::Output => Enforcement::enforced(
            "output sink in the worker: capture stops at the limit and the job is killed on the host",
        ),
        LimitName::Disk => Enforcement::enforced(
            "tmpfs of that size on the working directory, /tmp and /var/tmp (each) in the job's own mount \
             namespace, prlimit RLIMIT_FSIZE per file; the rest of the file system is read-only and tmpfs \
             pages count toward the memory limit",
        ),
        LimitName::Network => Enforcement::enforced(
            "the job's own network namespace with only a loopback interface (bubblewrap --unshare-net)",
        ),
        LimitName::Files => Enforcement::enforced(
            "read inside the job's sandbox by a process of the job's own uid after every other process of \
             the job was killed, and sent after its output; regular files only, symlinks never followed",
        ),
        LimitName::Egress => Enforcement::enforced(
            "the job's own network namespace with only a loopback interface (bubblewrap --unshare-net) on \
             the host; the one way out is a Unix socket bound into the sandbox that sshd forwards over the \
             job's SSH connection to the worker's egress proxy, which checks every connection's host and \
             port, resolves names itself and refuses non-public addresses",
        ),
    }
}

/// What a pool whose hosts have `cgroups` enforces; `cpus` is absent without a cpu
/// controller, so admission fails closed on it.
pub fn capabilities(cgroups: Cgroups) -> Capabilities {
    LimitName::ALL
        .into_iter()
        .chain([LimitName::Network, LimitName::Files, LimitName::Egress])
        .map(|limit| (limit, enforcement(limit, cgroups)))
        .filter(|(_, enforcement)| enforcement.status != EnforcementStatus::NotEnforced)
        .collect()
}

/// One entry per limit set in `limits`.
pub fn report(limits: &Limits, cgroups: Cgroups) -> EnforcementReport {
    limits
        .iter()
        .map(|(limit, _)| (limit, enforcement(limit, cgroups)))
        .collect()
}

/// Whether a program that ended on its own ran out of memory: a memory limit was set, the
/// program failed, and stderr shows an allocation failure, or (with a memory cgroup) the
/// kernel's OOM killer sent the SIGKILL this side did not.
pub fn looks_out_of_memory(
    memory_limit: bool,
    memory_cgroup: bool,
    exit: (Option<i32>, Option<i32>),
    stderr: &[u8],
) -> bool {
    if !memory_limit {
        return false;
    }
    if !oom::failed(exit) {
        return false;
    }
    if memory_cgroup && exit.1 == Some(SIGKILL) {
        return true;
    }
    oom::reports_allocation_failure(stderr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_needs_a_cgroup_and_network_is_always_cut() {
        let bare = capabilities(Cgroups::default());
        assert!(!bare.contains_key(&LimitName::Cpus));
        // Every limit but cpus, plus network, files and egress.
        assert_eq!(bare.len(), LimitName::ALL.len() - 1 + 3);
        assert_eq!(bare[&LimitName::Memory].status, EnforcementStatus::Partial);
        assert_eq!(bare[&LimitName::CpuTime].status, EnforcementStatus::Partial);
        assert_eq!(
            bare[&LimitName::Processes].status,
            EnforcementStatus::Enforced
        );
        assert_eq!(
            bare[&LimitName::Network].status,
            EnforcementStatus::Enforced
        );
        let full = capabilities(Cgroups::ALL);
        assert_eq!(full[&LimitName::Cpus].status, EnforcementStatus::Enforced);
        assert_eq!(
            full[&LimitName::CpuTime].status,
            EnforcementStatus::Enforced
        );
        let swapping = Cgroups {
            swap_bounded: false,
            ..Cgroups::ALL
        };
        assert_eq!(
            capabilities(swapping)[&LimitName::Memory].status,
            EnforcementStatus::Partial
        );
        assert_eq!(Cgroups::ALL.common(swapping), swapping);
        assert!(Cgroups::ALL.complete() && !swapping.common(Cgroups::default()).complete());
    }

    #[test]
    fn out_of_memory_needs_a_limit_and_a_failure() {
        let stderr = b"MemoryError";
        assert!(looks_out_of_memory(true, false, (Some(1), None), stderr));
        assert!(!looks_out_of_memory(false, false, (Some(1), None), stderr));
        assert!(!looks_out_of_memory(true, false, (Some(0), None), stderr));
        assert!(!looks_out_of_memory(true, false, (None, Some(9)), b""));
        assert!(looks_out_of_memory(true, true, (None, Some(9)), b""));
    }
}
