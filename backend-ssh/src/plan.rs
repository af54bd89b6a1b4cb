//! A job, as the sandbox helper on one particular host will run it.

use super::error::SshError;
use super::files;
use super::probe::HostProbe;
use super::request::{self, BACKSTOP_GRACE_SECS, FilesSpec, Plan, SHM_MAX, SandboxLimits};
use super::settings::SshSettings;
use super::upload::{self, Upload};
use super::verdict::Cgroups;
use openshell_backend::{EgressEndpoint, Job};

/// The upload for `job` on a host that `probe` describes, and the cgroups it gets there.
///
/// A limit goes to the helper's cgroups when the host has the controller, or when the pool
/// `promised` it to admission (every host had it): then a host that lost the controller
/// since makes the helper refuse the job (fail closed) instead of running it with less than
/// was promised. Otherwise memory, processes and CPU time fall back to rlimits, and `cpus`
/// (which has none) is left unenforced, as admission allowed and the report says.
///
/// A job held to egress rules names its egress directory `egress` (see [`super::egress`])
/// and runs under the forwarder.
pub fn prepare(
    job: &Job,
    settings: &SshSettings,
    probe: &HostProbe,
    promised: Cgroups,
    egress: Option<u64>,
) -> Result<(Upload, Cgroups), SshError> {
    upload::check_command(&job.argv, &job.env)?;
    let (files, contents) = upload::files(&job.files)?;
    let host = probe.cgroups;
    let cgroups = Cgroups {
        memory: host.memory || promised.memory,
        swap_bounded: host.swap_bounded,
        pids: host.pids || promised.pids,
        cpu: host.cpu || promised.cpu,
        cpu_time: host.cpu_time || promised.cpu_time,
    };
    let limits = &job.limits;
    let disk = limits.disk.unwrap_or(settings.tmpfs_size).bytes();
    let sandbox = SandboxLimits {
        memory: limits
            .memory
            .filter(|_| cgroups.memory)
            .map(|memory| memory.bytes()),
        millicpus: limits
            .cpus
            .filter(|_| cgroups.cpu)
            .map(|cpus| ((cpus * 1000.0).ceil() as u64).max(1)),
        pids: limits.processes.filter(|_| cgroups.pids),
        cpu_ms: limits
            .cpu_time
            .filter(|_| cgroups.cpu_time)
            .map(|cpu| cpu.millis()),
        disk,
        shm: disk.min(SHM_MAX),
        network: job.network,
        egress,
        backstop_ms: limits
            .timeout
            .map(|timeout| timeout.millis().div_ceil(1000) * 1000 + BACKSTOP_GRACE_SECS * 1000),
        files: job.outputs.as_ref().map(|outputs| FilesSpec {
            token: files::token(),
            max_count: outputs.max_files,
            max_bytes: outputs.max_bytes,
            patterns: outputs
                .patterns
                .iter()
                .map(|pattern| pattern.as_str().to_string())
                .collect(),
        }),
    };
    let plan = Plan {
        sandbox,
        path: settings.path.clone(),
        env: job
            .env
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
        argv: match egress {
            Some(_) => EgressEndpoint::wrap(&job.argv),
            None => job.argv.clone(),
        },
        files,
        rlimits: request::rlimits(limits, (cgroups.memory, cgroups.pids), |resource| {
            probe.hard.get(resource).copied()
        }),
    };
    Ok((upload::build(&plan, &contents, &settings.helper), cgroups))
}

#[cfg(test)]
mod tests {
    use openshell_protocol::{ByteSize, DurationMs, Limits, Payload};

    use super::*;

    fn job(limits: Limits) -> Job {
        Job {
            id: "j".into(),
            tenant: "t".into(),
            language: None,
            argv: vec!["true".into()],
            stdin: Payload::default(),
            env: Default::default(),
            files: Vec::new(),
            limits,
            network: false,
            egress: None,
            outputs: None,
        }
    }

    fn request_lines(upload: &Upload) -> String {
        let text = String::from_utf8_lossy(&upload.prefix).into_owned();
        let (first, rest) = text.split_once('\n').unwrap();
        let length: usize = first.rsplit(' ').next().unwrap().parse().unwrap();
        rest[..length].to_string()
    }

    #[test]
    fn limits_go_to_cgroups_the_host_has_or_the_pool_promised() {
        let limits = Limits {
            memory: Some(ByteSize::mib(64)),
            cpus: Some(0.5),
            processes: Some(10),
            cpu_time: Some(DurationMs::secs(2)),
            timeout: Some(DurationMs(1500)),
            ..Limits::default()
        };
        let settings = SshSettings::default();
        let full = HostProbe {
            cgroups: Cgroups::ALL,
            ..HostProbe::default()
        };
        let (upload, _) =
            prepare(&job(limits.clone()), &settings, &full, Cgroups::ALL, None).unwrap();
        assert_eq!(
            request_lines(&upload),
            "memory=67108864\nmillicpus=500\npids=10\ncpu_ms=2000\ndisk=268435456\nshm=67108864\n\
             network=0\nbackstop_ms=12000\n"
        );
        // Promised but gone from this host: still asked of the helper, which refuses.
        let bare = HostProbe::default();
        let (upload, _) =
            prepare(&job(limits.clone()), &settings, &bare, Cgroups::ALL, None).unwrap();
        assert!(request_lines(&upload).starts_with("memory=67108864\nmillicpus=500\n"));
        // Never promised: memory and processes fall back to rlimits, CPU time to RLIMIT_CPU,
        // and `cpus` stays unenforced (admission allowed it, the report says so).
        let (upload, cgroups) =
            prepare(&job(limits), &settings, &bare, Cgroups::default(), None).unwrap();
        assert_eq!(cgroups, Cgroups::default());
        assert_eq!(
            request_lines(&upload),
            "disk=268435456\nshm=67108864\nnetwork=0\nbackstop_ms=12000\n"
        );
        let text = String::from_utf8_lossy(&upload.prefix);
        assert!(text.contains("rlimit=--as=67108864") && text.contains("rlimit=--nproc=10"));
    }
}
