//! A job, as the wrapper on one particular host will run it.

use super::error::SshError;
use super::probe::HostProbe;
use super::script::{self, BACKSTOP_GRACE_SECS, CgroupPlan, Plan};
use super::settings::SshSettings;
use super::upload::{self, Upload};
use super::verdict::Mechanism;
use crate::backend::Job;

/// The wrapper's upload for `job` on a host that `probe` describes, and how limits apply there.
pub fn prepare(
    job: &Job,
    settings: &SshSettings,
    probe: &HostProbe,
) -> Result<(Upload, Mechanism), SshError> {
    upload::check_command(&job.argv, &job.env)?;
    let (files, contents) = upload::files(&job.files)?;
    let mechanism = mechanism(settings, probe);
    let with_cgroup = mechanism == Mechanism::Cgroup;
    let limits = &job.limits;
    let cgroup = settings
        .cgroup_parent
        .clone()
        .filter(|_| with_cgroup)
        .map(|parent| CgroupPlan {
            parent,
            memory: limits.memory.map(|memory| memory.bytes()),
            cpus: limits.cpus,
            pids: limits.processes,
        });
    let plan = Plan {
        work_root: settings.work_root.clone(),
        path: settings.path.clone(),
        env: job
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        argv: job.argv.clone(),
        files,
        rlimits: script::rlimits(limits, with_cgroup, |resource| {
            probe.hard.get(resource).copied()
        }),
        cgroup,
        backstop_secs: limits.timeout.map_or(0, |timeout| {
            timeout.millis().div_ceil(1000) + BACKSTOP_GRACE_SECS
        }),
    };
    Ok((upload::build(&plan, &contents), mechanism))
}

/// Cgroups when the pool names a delegated cgroup and the host's probe found it usable.
pub fn mechanism(settings: &SshSettings, probe: &HostProbe) -> Mechanism {
    if settings.cgroup_parent.is_some() && probe.cgroup {
        Mechanism::Cgroup
    } else {
        Mechanism::Rlimits
    }
}
