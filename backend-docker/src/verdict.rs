//! How each limit is enforced in a container, what the engine must support for it (fail
//! closed otherwise), and how a run ended.

use openshell_protocol::{Enforcement, EnforcementReport, EnforcementStatus, LimitName, Limits};

use super::command::PROLOGUE_FAILED;
use super::connect::Engine;
use super::spec::PIDS_OVERHEAD;
use openshell_backend::{Capabilities, Ending};

/// SIGKILL, the signal every stop by the backend sends.
pub(super) const SIGKILL: i32 = openshell_protocol::signal::SIGKILL;

/// Docker's exit code for a program killed by signal N is this plus N.
const SIGNALED_BASE: i32 = 128;

/// The exit codes that stand for a signal: 128 + 1 to 128 + 64 (the highest Linux signal).
const SIGNALED_MIN: i32 = SIGNALED_BASE + 1;

/// See [`SIGNALED_MIN`].
const SIGNALED_MAX: i32 = SIGNALED_BASE + 64;

/// How the backend enforces `limit` on `engine` (`None`: before any engine is known).
fn mechanism(limit: LimitName, engine: Option<&Engine>) -> Enforcement {
    match limit {
        LimitName::Timeout => Enforcement::enforced(
            "wall-clock timer from the job's start, then the whole container is killed (SIGKILL) and removed",
        ),
        LimitName::CpuTime => Enforcement::partial(
            "setrlimit(RLIMIT_CPU) via `ulimit -t`, rounded up to whole seconds; each process of the job gets the full amount",
        ),
        LimitName::Memory if engine.is_some_and(|engine| !engine.memory_limit) => {
            missing_controller("memory")
        }
        LimitName::Processes if engine.is_some_and(|engine| !engine.pids_limit) => {
            missing_controller("pids")
        }
        LimitName::Cpus if engine.is_some_and(|engine| !engine.cpu_quota) => {
            missing_controller("cpu")
        }
        LimitName::Memory if engine.is_some_and(|engine| !engine.swap_limit) => {
            Enforcement::partial(
                "cgroup memory limit of the container; the engine has no swap accounting, so the job may also swap",
            )
        }
        LimitName::Memory => Enforcement::enforced(
            "cgroup memory limit of the container with memory+swap equal (no swap); out_of_memory from the \
             container's OOMKilled state",
        ),
        LimitName::Cpus => {
            Enforcement::enforced("CFS quota of the container's cgroup (Docker NanoCpus)")
        }
        LimitName::Processes => Enforcement::enforced(format!(
            "pids cgroup limit of the container, counting threads, plus {PIDS_OVERHEAD} for its init and resident runner"
        )),
        LimitName::OpenFiles => {
            Enforcement::enforced("setrlimit(RLIMIT_NOFILE) via `ulimit -n`, per process")
        }
        LimitName::Output => Enforcement::enforced(
            "output sink: capture stops at the limit and the container is killed",
        ),
        LimitName::Disk => Enforcement::enforced(
            "tmpfs of that size on the working directory and on /tmp (each), setrlimit(RLIMIT_FSIZE) per \
             file; the root filesystem is read-only and tmpfs pages count toward the memory limit",
        ),
        LimitName::Network => Enforcement::enforced(
            "network mode `none`: the container's own network namespace with only a loopback interface",
        ),
        LimitName::Files => Enforcement::enforced(
            "the working directory read as a tar archive through the Engine API after the job's processes \
             were killed; regular files only, symlinks never followed",
        ),
        LimitName::Egress => Enforcement::enforced(
            "network mode `none` (only a loopback interface); the one way out is the worker's egress proxy on a \
             Unix socket mounted into the container, which checks every connection's host and port, resolves \
             names itself and refuses non-public addresses",
        ),
    }
}

/// A limit the engine's kernel has no cgroup controller for.
fn missing_controller(controller: &str) -> Enforcement {
    Enforcement::not_enforced(format!(
        "the Docker engine's kernel has no {controller} cgroup controller; enable it on the host"
    ))
}

/// The limits `engine` (the one last negotiated, kept through outages) can enforce, with
/// how: what admission checks each job against, so a job asking for a limit the engine lacks
/// is refused (or, where the pool allows unenforced limits, run and reported) before anything
/// is audited as started. Before any engine was reached (the health check reaches it before a
/// pool takes jobs) every limit counts, and [`check_engine`] is the backstop.
pub(super) fn capabilities(engine: Option<&Engine>) -> Capabilities {
    LimitName::ALL
        .into_iter()
        .chain([LimitName::Network, LimitName::Files, LimitName::Egress])
        .map(|limit| (limit, mechanism(limit, engine)))
        .filter(|(_, enforcement)| enforcement.status != EnforcementStatus::NotEnforced)
        .collect()
}

/// The backstop for a job admitted against an engine that has changed since (a daemon back
/// without a cgroup controller): the cgroup limit it asks for that `engine` lacks, if any.
/// Rare, and after the job's `started` event: admission normally refuses it first.
pub(super) fn check_engine(limits: &Limits, engine: &Engine) -> Option<&'static str> {
    [
        (limits.memory.is_some() && !engine.memory_limit, "memory"),
        (
            limits.processes.is_some() && !engine.pids_limit,
            "processes",
        ),
        (limits.cpus.is_some() && !engine.cpu_quota, "cpus"),
    ]
    .into_iter()
    .find_map(|(missing, limit)| missing.then_some(limit))
}

/// One entry per limit set in `limits`, unenforced ones included.
pub(super) fn report(limits: &Limits, engine: &Engine) -> EnforcementReport {
    limits
        .iter()
        .map(|(limit, _)| (limit, mechanism(limit, Some(engine))))
        .collect()
}

/// How a program that ended on its own is reported: out of memory when it failed and the
/// engine saw an OOM kill in its container.
pub(super) fn ending(exit_code: Option<i64>, oom_killed: bool) -> Ending {
    let failed = exit_code != Some(0);
    if failed && oom_killed {
        Ending::OutOfMemory
    } else {
        Ending::Exited
    }
}

/// The exit code and killing signal to report.
///
/// Docker (containerd) reports a program killed by signal N as exit code 128 + N, as a shell
/// does, and keeps no other trace of the signal: codes 129 to 192 are reported as signal 1 to
/// 64, so SIGKILL is `signal: 9` as on every backend. A program that itself exits with such a
/// code (mostly a shell passing on its child's death) is reported the same way. No exit code
/// at all means the program's container died under it (it killed its init): SIGKILL.
pub(super) fn exit_and_signal(
    ending: Ending,
    exit_code: Option<i64>,
) -> (Option<i32>, Option<i32>) {
    let code = exit_code.and_then(|code| i32::try_from(code).ok());
    match ending {
        Ending::Timeout | Ending::Cancelled | Ending::OutputLimit => (None, Some(SIGKILL)),
        Ending::Exited | Ending::OutOfMemory => match code {
            None => (None, Some(SIGKILL)),
            Some(code) if (SIGNALED_MIN..=SIGNALED_MAX).contains(&code) => {
                (None, Some(code - SIGNALED_BASE))
            }
            Some(code) => (Some(code), None),
        },
    }
}

/// Whether the prologue (not the job) failed: its exit code with its message on stderr.
pub(super) fn prologue_failed(exit_code: Option<i64>, stderr: &[u8]) -> bool {
    exit_code == Some(PROLOGUE_FAILED) && stderr.starts_with(b"openshell: ")
}

#[cfg(test)]
mod tests {
    use openshell_protocol::ByteSize;

    use super::*;

    fn engine() -> Engine {
        Engine {
            version: "20.10.24".into(),
            api: "1.41".into(),
            cgroup_version: "1".into(),
            memory_limit: true,
            swap_limit: true,
            pids_limit: true,
            cpu_quota: true,
        }
    }

    #[test]
    fn every_limit_is_a_capability_and_cpu_time_is_partial() {
        let capabilities = capabilities(Some(&engine()));
        assert_eq!(
            capabilities.len(),
            LimitName::ALL.len() + 3,
            "every limit, network, files and egress"
        );
        assert_eq!(capabilities, super::capabilities(None));
        let no_pids = Engine {
            pids_limit: false,
            ..engine()
        };
        let limits = Limits {
            processes: Some(10),
            ..Limits::default()
        };
        assert_eq!(check_engine(&limits, &no_pids), Some("processes"));
        assert_eq!(check_engine(&limits, &engine()), None);
        assert_eq!(
            capabilities[&LimitName::CpuTime].status,
            EnforcementStatus::Partial
        );
        assert_eq!(
            capabilities[&LimitName::Memory].status,
            EnforcementStatus::Enforced
        );
    }

    #[test]
    fn the_report_lists_the_limits_set_and_says_when_swap_is_not_limited() {
        let limits = Limits {
            memory: Some(ByteSize::mib(64)),
            disk: Some(ByteSize::mib(1)),
            ..Limits::default()
        };
        let report = report(&limits, &engine());
        assert_eq!(
            report.keys().copied().collect::<Vec<_>>(),
            [LimitName::Memory, LimitName::Disk]
        );
        let no_swap = Engine {
            swap_limit: false,
            ..engine()
        };
        assert_eq!(report_of(&limits, &no_swap), EnforcementStatus::Partial);
    }

    fn report_of(limits: &Limits, engine: &Engine) -> EnforcementStatus {
        report(limits, engine)[&LimitName::Memory].status
    }

    #[test]
    fn missing_cgroup_controllers_are_not_capabilities_and_are_reported() {
        let no_pids = Engine {
            pids_limit: false,
            ..engine()
        };
        let capabilities = capabilities(Some(&no_pids));
        assert!(!capabilities.contains_key(&LimitName::Processes));
        assert!(capabilities.contains_key(&LimitName::Memory));
        let limits = Limits {
            processes: Some(10),
            ..Limits::default()
        };
        assert_eq!(
            report(&limits, &no_pids)[&LimitName::Processes].status,
            EnforcementStatus::NotEnforced
        );
    }

    #[test]
    fn out_of_memory_needs_a_failure_and_the_engines_word() {
        assert_eq!(ending(Some(137), true), Ending::OutOfMemory);
        assert_eq!(ending(None, true), Ending::OutOfMemory);
        assert_eq!(ending(Some(0), true), Ending::Exited);
        assert_eq!(ending(Some(137), false), Ending::Exited);
        assert_eq!(
            exit_and_signal(Ending::OutOfMemory, Some(137)),
            (None, Some(9))
        );
        assert_eq!(exit_and_signal(Ending::Timeout, Some(0)), (None, Some(9)));
        assert_eq!(exit_and_signal(Ending::Exited, None), (None, Some(9)));
    }

    #[test]
    fn codes_past_128_are_the_signal_that_killed_the_program() {
        assert_eq!(exit_and_signal(Ending::Exited, Some(137)), (None, Some(9)));
        assert_eq!(exit_and_signal(Ending::Exited, Some(152)), (None, Some(24)));
        assert_eq!(exit_and_signal(Ending::Exited, Some(129)), (None, Some(1)));
        assert_eq!(exit_and_signal(Ending::Exited, Some(192)), (None, Some(64)));
        for code in [0, 1, 125, 128, 193, 255] {
            assert_eq!(
                exit_and_signal(Ending::Exited, Some(code)),
                (Some(code as i32), None)
            );
        }
    }

    #[test]
    fn prologue_failures_are_told_by_code_and_message() {
        assert!(prologue_failed(
            Some(125),
            b"openshell: cannot set the open_files limit (9)\n"
        ));
        assert!(!prologue_failed(Some(125), b"my own error\n"));
        assert!(!prologue_failed(Some(1), b"openshell: x\n"));
    }
}
