//! The container specification: hardened defaults, the limits Docker fixes at creation (the
//! [`Shape`] a warm container must match) and the cgroup [`Resources`] it can change later.
//! Pure functions, unit-tested without a daemon.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, ContainerUpdateBody, HostConfig, HostConfigLogConfig, ResourcesUlimits,
    RestartPolicy, RestartPolicyNameEnum,
};
use openshell_protocol::{ErrorKind, Limits};

use super::error;
use super::runner;
use super::settings::DockerSettings;
use openshell_backend::egress::SANDBOX_DIR;
use openshell_backend::{BackendError, EgressEndpoint};

/// Processes of a container besides the job's: its init and the resident runner.
pub(super) const PIDS_OVERHEAD: i64 = 2;

/// Largest `/dev/shm`; it is a tmpfs too, so it is capped like the others.
const SHM_MAX: u64 = 64 << 20;

/// What Docker fixes when it creates a container, hence what a warm container must match.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Shape {
    /// Image.
    pub image: String,
    /// Size of the working directory and `/tmp` tmpfs, in bytes.
    pub tmpfs_bytes: u64,
    /// Whether the container joins the pool's network instead of `none`.
    pub network: bool,
    /// The job's egress endpoint, mounted into a container on network `none`: one of its
    /// own, so such jobs always get a fresh container.
    pub egress: Option<EgressEndpoint>,
}

impl Shape {
    /// The shape a job needs: its image, its disk limit (or the default tmpfs size), its network.
    pub fn for_job(image: &str, limits: &Limits, network: bool, settings: &DockerSettings) -> Self {
        Self {
            image: image.to_string(),
            tmpfs_bytes: limits.disk.unwrap_or(settings.tmpfs_size).bytes(),
            network,
            egress: None,
        }
    }
}

/// Cgroup limits that the container update API can change on a running container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Resources {
    /// Memory (and memory plus swap) in bytes.
    pub memory: Option<i64>,
    /// CPU share in billionths of a core.
    pub nano_cpus: Option<i64>,
    /// Pids limit, including [`PIDS_OVERHEAD`].
    pub pids: i64,
}

impl Resources {
    /// The resources for `limits`; without a process limit, the settings' hardening cap.
    pub fn for_limits(limits: &Limits, settings: &DockerSettings) -> Self {
        let processes = limits.processes.unwrap_or(settings.max_processes);
        Self {
            memory: limits.memory.map(|memory| clamp(memory.bytes())),
            nano_cpus: limits.cpus.map(|cpus| (cpus * 1e9).round() as i64),
            pids: clamp(processes).saturating_add(PIDS_OVERHEAD),
        }
    }
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// How a running container created with some resources can serve a job wanting others.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Fit {
    /// Already right.
    Same,
    /// Right after this update.
    Update(Box<ContainerUpdateBody>),
    /// The job wants a limit removed, which an update cannot do: use a new container.
    Mismatch,
}

/// How a container created with `created` resources can take a job wanting `wanted`.
pub(super) fn fit(created: &Resources, wanted: &Resources) -> Fit {
    if created == wanted {
        return Fit::Same;
    }
    let removes = |created: Option<i64>, wanted: Option<i64>| created.is_some() && wanted.is_none();
    if removes(created.memory, wanted.memory) || removes(created.nano_cpus, wanted.nano_cpus) {
        return Fit::Mismatch;
    }
    let changed = |created: Option<i64>, wanted: Option<i64>| wanted.filter(|_| created != wanted);
    let memory = changed(created.memory, wanted.memory);
    Fit::Update(Box::new(ContainerUpdateBody {
        memory,
        memory_swap: memory,
        nano_cpus: changed(created.nano_cpus, wanted.nano_cpus),
        pids_limit: changed(Some(created.pids), Some(wanted.pids)),
        ..ContainerUpdateBody::default()
    }))
}

/// The numeric `uid:gid` of the settings' user; root is refused.
pub(super) fn user_ids(settings: &DockerSettings) -> Result<(u32, u32), BackendError> {
    let bad = |why: &str| {
        error::error(
            ErrorKind::Internal,
            "[pools.NAME.docker] user",
            format!(
                "user `{}` {why}; give a numeric non-root uid:gid such as 1000:1000 (the image's `sandbox` user)",
                settings.user
            ),
        )
    };
    let (uid, gid) = settings
        .user
        .split_once(':')
        .ok_or_else(|| bad("is not uid:gid"))?;
    let uid: u32 = uid.parse().map_err(|_| bad("has a non-numeric uid"))?;
    let gid: u32 = gid.parse().map_err(|_| bad("has a non-numeric gid"))?;
    if uid == 0 || gid == 0 {
        return Err(bad("is root"));
    }
    Ok((uid, gid))
}

/// The hardened container for `shape` with `resources`, labelled `labels`: its main process,
/// under an init, is the resident runner waiting on stdin for one job.
pub(super) fn container(
    settings: &DockerSettings,
    (uid, gid): (u32, u32),
    shape: &Shape,
    resources: &Resources,
    labels: HashMap<String, String>,
) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(shape.image.clone()),
        user: Some(format!("{uid}:{gid}")),
        hostname: Some("sandbox".to_string()),
        entrypoint: Some(runner::entrypoint()),
        cmd: Some(Vec::new()),
        // The runner waits on this stdin for its one job; closing it is the job's end of file.
        open_stdin: Some(true),
        stdin_once: Some(true),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        working_dir: Some(settings.workdir.clone()),
        labels: Some(labels),
        // Stopping (also when dockerd shuts down) kills at once: nothing in it needs a grace.
        stop_signal: Some("SIGKILL".to_string()),
        stop_timeout: Some(1),
        host_config: Some(host_config(settings, (uid, gid), shape, resources)),
        ..ContainerCreateBody::default()
    }
}

fn host_config(
    settings: &DockerSettings,
    (uid, gid): (u32, u32),
    shape: &Shape,
    resources: &Resources,
) -> HostConfig {
    let size = shape.tmpfs_bytes;
    let tmpfs = HashMap::from([
        (
            "/tmp".to_string(),
            format!("rw,nosuid,nodev,exec,size={size},mode=1777"),
        ),
        (
            settings.workdir.clone(),
            format!("rw,nosuid,nodev,exec,size={size},uid={uid},gid={gid},mode=0700"),
        ),
    ]);
    let nofile = clamp(settings.max_open_files);
    HostConfig {
        network_mode: Some(if shape.network && shape.egress.is_none() {
            settings.network.clone()
        } else {
            "none".to_string()
        }),
        binds: shape
            .egress
            .as_ref()
            .map(|egress| vec![format!("{}:{SANDBOX_DIR}:ro", egress.dir.display())]),
        extra_hosts: shape.egress.as_ref().map(|egress| {
            egress
                .hosts()
                .into_iter()
                .map(|(name, address)| format!("{name}:{address}"))
                .collect()
        }),
        // The forwarder serves allowed names on their own ports (443 too) as the job's user,
        // in the container's own network namespace only.
        sysctls: shape.egress.as_ref().map(|_| {
            HashMap::from([(
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "0".to_string(),
            )])
        }),
        readonly_rootfs: Some(true),
        tmpfs: Some(tmpfs),
        shm_size: Some(clamp(size.min(SHM_MAX))),
        cap_drop: Some(vec!["ALL".to_string()]),
        security_opt: Some(vec!["no-new-privileges".to_string()]),
        privileged: Some(false),
        init: Some(true),
        ipc_mode: Some("private".to_string()),
        memory: resources.memory,
        memory_swap: resources.memory,
        nano_cpus: resources.nano_cpus,
        pids_limit: Some(resources.pids),
        ulimits: Some(vec![ulimit("nofile", nofile), ulimit("core", 0)]),
        // Sandboxes, not the worker or the daemon, die first when the host runs out of memory.
        oom_score_adj: Some(500),
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".to_string()),
            config: None,
        }),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        auto_remove: Some(false),
        ..HostConfig::default()
    }
}

fn ulimit(name: &str, value: i64) -> ResourcesUlimits {
    ResourcesUlimits {
        name: Some(name.to_string()),
        soft: Some(value),
        hard: Some(value),
    }
}

#[cfg(test)]
mod tests {
    use openshell_protocol::ByteSize;

    use super::*;

    fn limits() -> Limits {
        Limits {
            memory: Some(ByteSize::mib(256)),
            cpus: Some(0.5),
            processes: Some(64),
            disk: Some(ByteSize::mib(16)),
            ..Limits::default()
        }
    }

    fn spec(network: bool) -> ContainerCreateBody {
        let settings = DockerSettings::default();
        let shape = Shape::for_job("img:1", &limits(), network, &settings);
        let resources = Resources::for_limits(&limits(), &settings);
        let labels = HashMap::from([("openshell.job".to_string(), "j1".to_string())]);
        container(&settings, (1000, 1000), &shape, &resources, labels)
    }

    #[test]
    fn containers_are_hardened_by_default() {
        let spec = spec(false);
        let host = spec.host_config.clone().unwrap();
        assert_eq!(spec.image.as_deref(), Some("img:1"));
        assert_eq!(spec.user.as_deref(), Some("1000:1000"));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_string()])
        );
        assert_eq!(host.init, Some(true));
        assert_eq!(host.privileged, Some(false));
        assert!(host.binds.is_none() && host.mounts.is_none() && host.volumes_from.is_none());
        assert!(host.devices.is_none() && host.cap_add.is_none());
        assert!(spec.volumes.is_none());
        assert_eq!(spec.labels.unwrap()["openshell.job"], "j1");
    }

    #[test]
    fn limits_become_cgroup_limits_tmpfs_sizes_and_ulimits() {
        let host = spec(false).host_config.unwrap();
        assert_eq!(host.memory, Some(256 << 20));
        assert_eq!(
            host.memory_swap, host.memory,
            "no swap beyond the memory limit"
        );
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.pids_limit, Some(64 + PIDS_OVERHEAD));
        let tmpfs = host.tmpfs.unwrap();
        assert!(tmpfs["/tmp"].contains(&format!("size={}", 16 << 20)));
        let workdir = &tmpfs["/workspace"];
        assert!(workdir.contains("uid=1000,gid=1000") && workdir.contains("size=16777216"));
        assert_eq!(host.shm_size, Some(16 << 20));
        let ulimits = host.ulimits.unwrap();
        assert!(ulimits.contains(&ulimit("nofile", 4096)) && ulimits.contains(&ulimit("core", 0)));
    }

    #[test]
    fn network_only_when_the_shape_has_it() {
        let host = spec(true).host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
    }

    #[test]
    fn egress_jobs_get_network_none_their_socket_and_their_names() {
        let settings = DockerSettings::default();
        let mut shape = Shape::for_job("img:1", &limits(), false, &settings);
        shape.egress = Some(EgressEndpoint {
            dir: "/tmp/openshell-egress/egress-x".into(),
            names: vec![("pypi.org".into(), 443)],
        });
        let resources = Resources::for_limits(&limits(), &settings);
        let spec = container(&settings, (1000, 1000), &shape, &resources, HashMap::new());
        let host = spec.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(
            host.binds.unwrap(),
            ["/tmp/openshell-egress/egress-x:/run/openshell-egress:ro"]
        );
        assert_eq!(host.extra_hosts.unwrap(), ["pypi.org:127.77.0.1"]);
        assert_eq!(
            host.sysctls.unwrap()["net.ipv4.ip_unprivileged_port_start"],
            "0"
        );
        assert_eq!(host.cap_add, None);
    }

    #[test]
    fn unlimited_jobs_still_get_the_hardening_caps() {
        let settings = DockerSettings::default();
        let resources = Resources::for_limits(&Limits::default(), &settings);
        assert_eq!(resources.memory, None);
        assert_eq!(resources.pids, 4096 + PIDS_OVERHEAD);
        let shape = Shape::for_job("img", &Limits::default(), false, &settings);
        assert_eq!(shape.tmpfs_bytes, 256 << 20);
    }

    #[test]
    fn warm_containers_fit_by_update_unless_a_limit_must_go() {
        let settings = DockerSettings::default();
        let created = Resources::for_limits(&Limits::default(), &settings);
        let wanted = Resources::for_limits(&limits(), &settings);
        assert_eq!(fit(&created, &created), Fit::Same);
        let Fit::Update(update) = fit(&created, &wanted) else {
            panic!("expected an update");
        };
        assert_eq!(update.memory, Some(256 << 20));
        assert_eq!(update.memory_swap, Some(256 << 20));
        assert_eq!(update.nano_cpus, Some(500_000_000));
        assert_eq!(update.pids_limit, Some(66));
        assert_eq!(fit(&wanted, &created), Fit::Mismatch);
        let only_pids = Resources { pids: 10, ..wanted };
        let Fit::Update(update) = fit(&wanted, &only_pids) else {
            panic!("expected an update");
        };
        assert_eq!(
            (update.memory, update.nano_cpus, update.pids_limit),
            (None, None, Some(10))
        );
    }

    #[test]
    fn users_must_be_numeric_and_not_root() {
        let with = |user: &str| DockerSettings {
            user: user.to_string(),
            ..DockerSettings::default()
        };
        assert_eq!(user_ids(&with("1000:1001")).unwrap(), (1000, 1001));
        for bad in ["sandbox", "0:0", "1000:0", "1000", "a:b"] {
            assert!(user_ids(&with(bad)).is_err(), "{bad} accepted");
        }
    }
}
