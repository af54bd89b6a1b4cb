//! How each limit is enforced on a host, and the out-of-memory verdict.

use openshell_protocol::{Enforcement, EnforcementReport, EnforcementStatus, LimitName, Limits};

use crate::backend::{Capabilities, oom};

/// SIGKILL's number.
const SIGKILL: i32 = 9;

/// How limits are enforced on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// prlimit on the host only.
    Rlimits,
    /// The job's own cgroup v2 directory, plus rlimits for what cgroups do not cover.
    Cgroup,
}

/// How `limit` is enforced by `mechanism`, for jobs of remote `user`.
pub fn enforcement(limit: LimitName, mechanism: Mechanism, user: &str) -> Enforcement {
    let cgroup = mechanism == Mechanism::Cgroup;
    match limit {
        LimitName::Timeout => Enforcement::enforced(
            "worker-side wall-clock timer, then SIGKILL to the job's process group on the host from a \
             second SSH channel; a keeper on the host kills the group at the timeout + 10s if the worker is gone",
        ),
        LimitName::CpuTime => Enforcement::partial(
            "prlimit RLIMIT_CPU on the host, rounded up to whole seconds; each process of the job gets the full amount",
        ),
        LimitName::Memory if cgroup => Enforcement::enforced(
            "cgroup v2 memory.max (swap 0) of the job's own cgroup on the host",
        ),
        LimitName::Memory => Enforcement::partial(
            "rlimit only (the host offers no usable cgroup): prlimit RLIMIT_AS caps each process's address \
             space, not the job's total; out_of_memory is a heuristic from the program's stderr; V8 (node) \
             cannot start under it",
        ),
        LimitName::Cpus if cgroup => {
            Enforcement::enforced("cgroup v2 cpu.max of the job's own cgroup on the host")
        }
        LimitName::Cpus => Enforcement::not_enforced(
            "the host offers no usable cgroup, and rlimits cannot limit CPU share; set [pools.NAME.ssh] \
             cgroup_parent to a delegated cgroup (deploy/ssh-host/prepare.sh --cgroup)",
        ),
        LimitName::Processes if cgroup => {
            Enforcement::enforced("cgroup v2 pids.max of the job's own cgroup on the host")
        }
        LimitName::Processes => Enforcement::partial(format!(
            "rlimit only: prlimit RLIMIT_NPROC counts every process of remote user `{user}`, so jobs running \
             at once share it (each also holds about 4 processes for its SSH session and keeper)"
        )),
        LimitName::OpenFiles => {
            Enforcement::enforced("prlimit RLIMIT_NOFILE on the host, per process")
        }
        LimitName::Output => Enforcement::enforced(
            "output sink in the worker: capture stops at the limit and the job's process group is killed on the host",
        ),
        LimitName::Disk => {
            Enforcement::partial("prlimit RLIMIT_FSIZE on the host caps each file, not total disk")
        }
    }
}

/// The limits `mechanism` can enforce; `cpus` is absent without cgroups, so admission fails closed on it.
pub fn capabilities(mechanism: Mechanism, user: &str) -> Capabilities {
    LimitName::ALL
        .into_iter()
        .map(|limit| (limit, enforcement(limit, mechanism, user)))
        .filter(|(_, enforcement)| enforcement.status != EnforcementStatus::NotEnforced)
        .collect()
}

/// One entry per limit set in `limits`.
pub fn report(limits: &Limits, mechanism: Mechanism, user: &str) -> EnforcementReport {
    limits
        .iter()
        .map(|(limit, _)| (limit, enforcement(limit, mechanism, user)))
        .collect()
}

/// Whether a program that ended on its own ran out of memory: a memory limit was set, the
/// program failed, and stderr shows an allocation failure, or (with a cgroup) the kernel's
/// OOM killer sent the SIGKILL this side did not.
pub fn looks_out_of_memory(
    memory_limit: bool,
    mechanism: Mechanism,
    exit: (Option<i32>, Option<i32>),
    stderr: &[u8],
) -> bool {
    if !memory_limit {
        return false;
    }
    if !oom::failed(exit) {
        return false;
    }
    if mechanism == Mechanism::Cgroup && exit.1 == Some(SIGKILL) {
        return true;
    }
    oom::reports_allocation_failure(stderr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_needs_a_cgroup() {
        let rlimits = capabilities(Mechanism::Rlimits, "u");
        assert!(!rlimits.contains_key(&LimitName::Cpus));
        assert_eq!(rlimits.len(), LimitName::ALL.len() - 1);
        assert_eq!(
            rlimits[&LimitName::Memory].status,
            EnforcementStatus::Partial
        );
        assert!(
            rlimits[&LimitName::Memory]
                .mechanism
                .contains("rlimit only")
        );
        let cgroup = capabilities(Mechanism::Cgroup, "u");
        assert_eq!(cgroup[&LimitName::Cpus].status, EnforcementStatus::Enforced);
    }

    #[test]
    fn out_of_memory_needs_a_limit_and_a_failure() {
        let stderr = b"MemoryError";
        assert!(looks_out_of_memory(
            true,
            Mechanism::Rlimits,
            (Some(1), None),
            stderr
        ));
        assert!(!looks_out_of_memory(
            false,
            Mechanism::Rlimits,
            (Some(1), None),
            stderr
        ));
        assert!(!looks_out_of_memory(
            true,
            Mechanism::Rlimits,
            (Some(0), None),
            stderr
        ));
        assert!(!looks_out_of_memory(
            true,
            Mechanism::Rlimits,
            (None, Some(9)),
            b""
        ));
        assert!(looks_out_of_memory(
            true,
            Mechanism::Cgroup,
            (None, Some(9)),
            b""
        ));
    }
}
