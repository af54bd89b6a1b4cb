//! How each limit is enforced, and the out-of-memory verdict.

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use openshell_protocol::{Enforcement, EnforcementReport, EnforcementStatus, LimitName, Limits};

use super::user::RunAs;
use crate::backend::{Capabilities, oom};

/// Peak resident memory at or above this share of the memory limit counts as "near the limit".
const NEAR_LIMIT_PERCENT: u64 = 75;

/// How this backend enforces `limit` for jobs running as `run_as`, in a bubblewrap sandbox
/// when `sandboxed`.
pub(super) fn mechanism(limit: LimitName, run_as: &RunAs, sandboxed: bool) -> Enforcement {
    match limit {
        LimitName::Timeout if sandboxed => Enforcement::enforced(
            "wall-clock timer, then SIGKILL to the job's sandbox: every process of its pid namespace dies",
        ),
        LimitName::Timeout => {
            Enforcement::enforced("wall-clock timer, then SIGKILL to the job's process group")
        }
        LimitName::CpuTime => Enforcement::partial(
            "setrlimit(RLIMIT_CPU), rounded up to whole seconds; each process of the job gets the full amount",
        ),
        LimitName::Memory => Enforcement::partial(format!(
            "setrlimit(RLIMIT_DATA): caps each process's private writable memory (heap, anonymous \
             mmap), not the job's total, nor shared or file-backed mappings or the main stack; \
             out_of_memory is a heuristic (the program failed and printed an allocation error, \
             or died of SIGSEGV/SIGABRT/SIGKILL with peak RSS at least {NEAR_LIMIT_PERCENT}% of the limit)"
        )),
        LimitName::Cpus => {
            Enforcement::not_enforced("the local backend has no cgroups to limit CPU share")
        }
        LimitName::Processes => processes(run_as),
        LimitName::OpenFiles => Enforcement::enforced("setrlimit(RLIMIT_NOFILE), per process"),
        LimitName::Output if sandboxed => Enforcement::enforced(
            "output sink: capture stops at the limit and the job's sandbox (its whole pid namespace) is killed",
        ),
        LimitName::Output => Enforcement::enforced(
            "output sink: capture stops at the limit and the process group is killed",
        ),
        LimitName::Disk if sandboxed => Enforcement::partial(
            "setrlimit(RLIMIT_FSIZE) caps each file; /tmp, /var/tmp and /dev/shm are the job's own tmpfs of \
             that size (each), but the working directory under work_root has no total cap",
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

/// The limits this backend can enforce, with how; `cpus` is absent, so admission fails closed
/// on it, and `network` is present only in a sandbox.
pub(super) fn capabilities(run_as: &RunAs, sandboxed: bool) -> Capabilities {
    LimitName::ALL
        .into_iter()
        .chain([LimitName::Network])
        .map(|limit| (limit, mechanism(limit, run_as, sandboxed)))
        .filter(|(_, enforcement)| enforcement.status != EnforcementStatus::NotEnforced)
        .collect()
}

/// One entry per limit set in `limits`.
pub(super) fn report(limits: &Limits, run_as: &RunAs, sandboxed: bool) -> EnforcementReport {
    limits
        .iter()
        .map(|(limit, _)| (limit, mechanism(limit, run_as, sandboxed)))
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

    #[test]
    fn cpus_is_never_a_capability_and_processes_depends_on_the_user() {
        let dedicated = capabilities(&run_as(65534, true), false);
        assert!(!dedicated.contains_key(&LimitName::Cpus));
        assert_eq!(
            dedicated[&LimitName::Processes].status,
            EnforcementStatus::Enforced
        );
        let own = capabilities(&run_as(1000, false), false);
        assert_eq!(
            own[&LimitName::Processes].status,
            EnforcementStatus::Partial
        );
        let root = capabilities(&run_as(0, true), false);
        assert!(!root.contains_key(&LimitName::Processes));
        assert_eq!(root.len(), LimitName::ALL.len() - 2);
    }

    #[test]
    fn network_is_a_capability_only_in_a_sandbox() {
        let plain = capabilities(&run_as(65534, true), false);
        assert!(!plain.contains_key(&LimitName::Network));
        let sandboxed = capabilities(&run_as(65534, true), true);
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
        let report = report(&limits, &run_as(65534, true), false);
        assert_eq!(report.len(), 2);
        assert_eq!(
            report[&LimitName::Cpus].status,
            EnforcementStatus::NotEnforced
        );
        assert_eq!(report[&LimitName::Disk].status, EnforcementStatus::Partial);
    }
}
