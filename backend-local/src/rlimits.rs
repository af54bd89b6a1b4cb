//! The resource limits (`setrlimit`) a job's process starts with.
//!
//! Memory is RLIMIT_DATA, not RLIMIT_AS: since Linux 4.7 RLIMIT_DATA counts every private
//! writable mapping (brk and anonymous mmap, which is where heaps live) but not PROT_NONE
//! reservations, so runtimes that reserve a large address space up front (V8, the JVM, Go)
//! start under it, while a program that fills memory still hits the limit.

use nix::libc;
use nix::sys::resource::{Resource, getrlimit, rlim_t};
use openshell_protocol::{DurationMs, Limits};

use super::cgroup::{Controller, JobCgroup};
use super::launch::RawRlimit;

/// One limit to set in the child before exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rlimit {
    /// Which resource.
    pub resource: Resource,
    /// The soft limit (signals or errors start here).
    pub soft: rlim_t,
    /// The hard limit (the ceiling the process cannot raise).
    pub hard: rlim_t,
}

impl Rlimit {
    fn both(resource: Resource, value: u64) -> Self {
        Self {
            resource,
            soft: value,
            hard: value,
        }
    }

    /// The limit as the child's raw `prlimit64` call takes it.
    pub fn raw(&self) -> RawRlimit {
        RawRlimit {
            // The enum's discriminants are the RLIMIT_* numbers.
            resource: self.resource as libc::c_int,
            limit: libc::rlimit64 {
                rlim_cur: self.soft,
                rlim_max: self.hard,
            },
        }
    }
}

/// The rlimits a job's own process needs for `limits` beside its cgroup: what the cgroup
/// limits for all its processes (memory, processes) needs no per-process rlimit.
pub(super) fn beside(limits: &Limits, cgroup: Option<&JobCgroup>) -> Vec<Rlimit> {
    let covered = |controller| cgroup.is_some_and(|cgroup| cgroup.has(controller));
    plan(&Limits {
        memory: limits.memory.filter(|_| !covered(Controller::Memory)),
        processes: limits.processes.filter(|_| !covered(Controller::Pids)),
        ..limits.clone()
    })
}

/// The rlimits for `limits`, clamped to the worker's own hard limits.
pub(super) fn plan(limits: &Limits) -> Vec<Rlimit> {
    clamp(wanted(limits), |resource| {
        getrlimit(resource).ok().map(|(_, hard)| hard)
    })
}

/// The rlimits `limits` ask for. RLIMIT_CORE is always 0: a core dump could fill the disk
/// and would be written wherever the host's core_pattern says, outliving the job.
pub(super) fn wanted(limits: &Limits) -> Vec<Rlimit> {
    let mut wanted = vec![Rlimit::both(Resource::RLIMIT_CORE, 0)];
    if let Some(memory) = limits.memory {
        wanted.push(Rlimit::both(Resource::RLIMIT_DATA, memory.bytes()));
    }
    if let Some(cpu_time) = limits.cpu_time {
        // SIGXCPU at the soft limit, SIGKILL a second later for programs that catch it.
        let seconds = cpu_seconds(cpu_time);
        wanted.push(Rlimit {
            resource: Resource::RLIMIT_CPU,
            soft: seconds,
            hard: seconds.saturating_add(1),
        });
    }
    if let Some(processes) = limits.processes {
        wanted.push(Rlimit::both(Resource::RLIMIT_NPROC, processes));
    }
    if let Some(open_files) = limits.open_files {
        wanted.push(Rlimit::both(Resource::RLIMIT_NOFILE, open_files));
    }
    if let Some(disk) = limits.disk {
        wanted.push(Rlimit::both(Resource::RLIMIT_FSIZE, disk.bytes()));
    }
    wanted
}

/// RLIMIT_CPU counts whole seconds: round up, and never 0 (which the kernel treats as 1 anyway).
pub(super) fn cpu_seconds(cpu_time: DurationMs) -> u64 {
    cpu_time.millis().div_ceil(1000).max(1)
}

/// Lowers each limit to the worker's hard limit for it: an unprivileged child may not raise a
/// hard limit, and the worker's own limit is the stricter one anyway.
pub(super) fn clamp(
    wanted: Vec<Rlimit>,
    current_hard: impl Fn(Resource) -> Option<rlim_t>,
) -> Vec<Rlimit> {
    wanted
        .into_iter()
        .map(|limit| match current_hard(limit.resource) {
            Some(ceiling) => {
                let hard = limit.hard.min(ceiling);
                Rlimit {
                    soft: limit.soft.min(hard),
                    hard,
                    ..limit
                }
            }
            None => limit,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use openshell_protocol::ByteSize;

    use super::*;

    fn find(limits: &[Rlimit], resource: Resource) -> Option<Rlimit> {
        limits
            .iter()
            .copied()
            .find(|limit| limit.resource == resource)
    }

    #[test]
    fn core_dumps_are_always_off() {
        let limits = wanted(&Limits::default());
        assert_eq!(limits, vec![Rlimit::both(Resource::RLIMIT_CORE, 0)]);
    }

    #[test]
    fn each_limit_maps_to_its_rlimit() {
        let limits = Limits {
            memory: Some(ByteSize::mib(256)),
            processes: Some(64),
            open_files: Some(128),
            disk: Some(ByteSize::mib(10)),
            ..Limits::default()
        };
        let wanted = wanted(&limits);
        assert_eq!(
            find(&wanted, Resource::RLIMIT_DATA).unwrap().hard,
            256 << 20
        );
        assert!(
            find(&wanted, Resource::RLIMIT_AS).is_none(),
            "V8 cannot start under RLIMIT_AS"
        );
        assert_eq!(find(&wanted, Resource::RLIMIT_NPROC).unwrap().soft, 64);
        assert_eq!(find(&wanted, Resource::RLIMIT_NOFILE).unwrap().soft, 128);
        assert_eq!(
            find(&wanted, Resource::RLIMIT_FSIZE).unwrap().soft,
            10 << 20
        );
        assert!(find(&wanted, Resource::RLIMIT_CPU).is_none());
    }

    #[test]
    fn cpu_time_rounds_up_to_whole_seconds_with_a_kill_second_later() {
        assert_eq!(cpu_seconds(DurationMs(0)), 1);
        assert_eq!(cpu_seconds(DurationMs(1000)), 1);
        assert_eq!(cpu_seconds(DurationMs(1001)), 2);
        let limits = Limits {
            cpu_time: Some(DurationMs(1500)),
            ..Limits::default()
        };
        let cpu = find(&wanted(&limits), Resource::RLIMIT_CPU).unwrap();
        assert_eq!((cpu.soft, cpu.hard), (2, 3));
    }

    #[test]
    fn clamping_never_raises_and_keeps_soft_under_hard() {
        let wanted = vec![
            Rlimit::both(Resource::RLIMIT_NOFILE, 100_000),
            Rlimit {
                resource: Resource::RLIMIT_CPU,
                soft: 5,
                hard: 6,
            },
            Rlimit::both(Resource::RLIMIT_NPROC, 10),
        ];
        let clamped = clamp(wanted, |resource| match resource {
            Resource::RLIMIT_NOFILE => Some(1024),
            Resource::RLIMIT_CPU => Some(3),
            _ => None,
        });
        assert_eq!(clamped[0], Rlimit::both(Resource::RLIMIT_NOFILE, 1024));
        assert_eq!((clamped[1].soft, clamped[1].hard), (3, 3));
        assert_eq!(clamped[2], Rlimit::both(Resource::RLIMIT_NPROC, 10));
    }

    #[test]
    fn raw_limits_carry_the_kernel_resource_numbers() {
        let raw = Rlimit::both(Resource::RLIMIT_DATA, 1 << 20).raw();
        assert_eq!(raw.resource, libc::RLIMIT_DATA as libc::c_int);
        assert_eq!((raw.limit.rlim_cur, raw.limit.rlim_max), (1 << 20, 1 << 20));
        let nofile = Rlimit::both(Resource::RLIMIT_NOFILE, 8).raw();
        assert_eq!(nofile.resource, libc::RLIMIT_NOFILE as libc::c_int);
    }
}
