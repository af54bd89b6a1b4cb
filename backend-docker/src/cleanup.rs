//! Orphan cleanup: containers carrying OpenShell's labels that no live job owns are removed at
//! start-up and periodically, and a backend removes all of its own when it is dropped.
//!
//! A container is an orphan when its owner (see [`super::labels::owner`]) is this backend
//! instance but it is no longer in use, or a process on this host that has exited. Containers
//! of live neighbours (another worker or pool on this engine) and of other hosts are left alone.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::labels::{self, Identity, Owner};
use super::sandbox::{self, Factory};
use openshell_backend::BackendError;

/// A container of ours not in use is left this long before it counts as an orphan: it may be
/// between its creation and its registration.
const GRACE: Duration = Duration::from_secs(60);

/// What a sweep found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Swept {
    /// Orphans removed.
    pub removed: usize,
    /// Containers of ours, in use or warm, that no longer run (the daemon restarted).
    pub dead_ours: usize,
}

/// Lists every OpenShell container on the engine and removes the orphans.
pub(super) async fn sweep(factory: &Factory) -> Result<Swept, BackendError> {
    let conn = &factory.conn;
    conn.engine().await?;
    let containers = list(conn.docker(), &format!("{}=true", labels::MANAGED))
        .await
        .map_err(|failure| conn.fail("listing OpenShell containers", "orphan sweep", &failure))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let mut swept = Swept::default();
    for container in containers {
        let Some(id) = container.id.clone() else {
            continue;
        };
        let running = container.state == Some(ContainerSummaryStateEnum::RUNNING);
        let orphan = match classify(&container, &factory.identity) {
            Owner::Us if factory.live.contains(&id) => {
                swept.dead_ours += usize::from(!running);
                false
            }
            Owner::Us => age(&container, now) > GRACE,
            Owner::Gone => true,
            Owner::LiveNeighbour | Owner::Elsewhere => false,
        };
        if orphan {
            tracing::info!(container = %id, labels = ?container.labels, "removing an orphaned OpenShell container");
            sandbox::destroy(conn, &factory.live, &id).await;
            swept.removed += 1;
        }
    }
    Ok(swept)
}

fn classify(container: &ContainerSummary, us: &Identity) -> Owner {
    let empty = HashMap::new();
    labels::owner(container.labels.as_ref().unwrap_or(&empty), us, pid_alive)
}

fn age(container: &ContainerSummary, now: u64) -> Duration {
    let created = container
        .created
        .and_then(|created| u64::try_from(created).ok())
        .unwrap_or(0);
    Duration::from_secs(now.saturating_sub(created))
}

/// Whether a process with `pid` exists on this host (signal 0 checks without sending).
fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

async fn list(
    docker: &Docker,
    label: &str,
) -> Result<Vec<ContainerSummary>, bollard::errors::Error> {
    let filters = HashMap::from([("label", vec![label.to_string()])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    docker.list_containers(Some(options)).await
}

/// Removes every container of backend instance `instance` at `endpoint`, blocking, from a
/// thread of its own: it runs while the backend is dropped, maybe as the runtime shuts down.
/// Best effort within `timeout`.
pub(super) fn remove_instance_blocking(endpoint: String, instance: String, timeout: Duration) {
    let worker = std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::warn!("cannot remove this backend's containers: {error}");
                return;
            }
        };
        let removal =
            async { tokio::time::timeout(timeout, remove_instance(&endpoint, &instance)).await };
        if runtime.block_on(removal).is_err() {
            tracing::warn!(%endpoint, %instance, "removing this backend's containers timed out; the next start-up sweep removes them");
        }
    });
    let _ = worker.join();
}

/// Removes the instance's containers until none is left for [`SETTLE`]: a warm container
/// whose create was in flight when the backend was dropped appears only after the first pass.
async fn remove_instance(endpoint: &str, instance: &str) {
    let Ok(docker) = Docker::connect_with_host(endpoint) else {
        return;
    };
    let Ok(docker) = docker.negotiate_version().await else {
        return;
    };
    let label = format!("{}={instance}", labels::INSTANCE);
    let mut last_seen = std::time::Instant::now();
    loop {
        let Ok(containers) = list(&docker, &label).await else {
            return;
        };
        if !containers.is_empty() {
            last_seen = std::time::Instant::now();
            remove_all(&docker, &containers).await;
        } else if last_seen.elapsed() >= SETTLE {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How long the shutdown sweep keeps looking for containers created in the meantime.
const SETTLE: Duration = Duration::from_secs(2);

async fn remove_all(docker: &Docker, containers: &[ContainerSummary]) {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    let removals = containers
        .iter()
        .filter_map(|container| container.id.as_deref())
        .map(|id| docker.remove_container(id, Some(options.clone())));
    for (result, container) in futures::future::join_all(removals)
        .await
        .into_iter()
        .zip(containers)
    {
        if let Err(error) = result {
            tracing::debug!(container = ?container.id, "removal at shutdown failed: {error}");
        }
    }
}
