//! A job, as the sandbox helper on one particular host will run it.

use super::error::SshError;
use super::probe::HostProbe;
use super::request::{self, BACKSTOP_GRACE_SECS, Plan, SHM_MAX, SandboxLimits};
use super::settings::SshSettings;
use super::upload::{self, Upload};
use super::verdict::Cgroups;
use crate::backend::Job;

/// The upload for `job` on a host that `probe` describes, and the cgroups it gets there.
///
/// A limit goes to the helper's cgroups when the host has the controller, and to rlimits
/// otherwise; `cpus` has no rlimit, so it goes to the helper either way, which refuses it on
/// a host without a cpu controller (fail closed) instead of running the job unlimited.
pub fn prepare(
    job: &Job,
    settings: &SshSettings,
    probe: &HostProbe,
) -> Result<(Upload, Cgroups), SshError> {
    upload::check_command(&job.argv, &job.env)?;
    let (files, contents) = upload::files(&job.files)?;
    let cgroups = probe.cgroups;
    let limits = &job.limits;
    let disk = limits.disk.unwrap_or(settings.tmpfs_size).bytes();
    let sandbox = SandboxLimits {
        memory: limits
            .memory
            .filter(|_| cgroups.memory)
            .map(|memory| memory.bytes()),
        millicpus: limits
            .cpus
            .map(|cpus| ((cpus * 1000.0).ceil() as u64).max(1)),
        pids: limits.processes.filter(|_| cgroups.pids),
        cpu_ms: limits
            .cpu_time
            .filter(|_| cgroups.cpu_time)
            .map(|cpu| cpu.millis()),
        disk,
        shm: disk.min(SHM_MAX),
        network: job.network,
        backstop_ms: limits
            .timeout
            .map(|timeout| timeout.millis().div_ceil(1000) * 1000 + BACKSTOP_GRACE_SECS * 1000),
    };
    let plan = Plan {
        sandbox,
        path: settings.path.clone(),
        env: job
            .env
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
        argv: job.argv.clone(),
        files,
        rlimits: request::rlimits(limits, (cgroups.memory, cgroups.pids), |resource| {
            probe.hard.get(resource).copied()
        }),
    };
    Ok((upload::build(&plan, &contents, &settings.helper), cgroups))
}
