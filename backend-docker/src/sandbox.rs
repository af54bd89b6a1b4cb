//! Sandboxes: creating and starting a hardened container, and destroying it. A [`Sandbox`]
//! owns its container: dropping it removes the container in the background, however the job
//! or the pool let go of it (also when a future is dropped mid-creation). Every container this
//! backend owns is in [`Live`] from creation to removal, so the orphan sweep spares it.

use openshell_backend::BackendMetrics;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bollard::container::AttachContainerResults;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder,
};
use tokio_util::task::TaskTracker;

use super::connect::Connection;
use super::error::{self, Failure};
use super::labels::Identity;
use super::measure::{self, Meter, Usage};
use super::quiet::{Busy, Reaper};
use super::settings::DockerSettings;
use super::spec::{self, Resources, Shape};
use openshell_backend::BackendError;

/// How long a stopped container may take to report that it stopped.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Removes a container (by id, or by name while its creation is in flight) when dropped: at
/// once, or at the next quiet moment once it is `deferred`.
#[derive(Debug)]
struct Claim {
    factory: Arc<Factory>,
    target: String,
    deferred: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.deferred {
            self.factory.reaper.push(&self.target);
        } else {
            self.factory.destroy_later(&self.target);
        }
    }
}

/// A started container, removed when dropped.
#[derive(Debug)]
pub(super) struct Sandbox {
    _claim: Claim,
    /// Container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// What it was created with.
    pub shape: Shape,
    /// Its cgroup limits now.
    pub resources: Resources,
    /// How its usage is read.
    pub meter: Meter,
    /// What it had used before any job ran in it (nothing with the API meter, whose second
    /// call would wait for the engine's next sample).
    pub baseline: Usage,
    /// The connection to its runner's stdin and output, until a job takes it (in a mutex
    /// only so that a `&Sandbox` can be shared across tasks; it is taken through `&mut`).
    attached: Mutex<Option<AttachContainerResults>>,
}

impl Sandbox {
    /// Lets its removal wait for a quiet moment (see [`super::quiet`]): only for a sandbox
    /// whose job ended cleanly. Its processes are stopped first, so nothing of the job runs
    /// on even if it got past the runner's own kill (a job may trace the runner, which runs as
    /// its user): with SIGSTOP through its cgroup on this host (no engine work), else with
    /// the engine's SIGKILL.
    pub fn remove_when_quiet(&mut self) {
        let stopped = matches!(&self.meter, Meter::Cgroup(files) if files.stop_all());
        if !stopped {
            self._claim.factory.stop_later(&self.id);
        }
        self._claim.deferred = true;
    }

    /// Takes the connection to its runner; `None` once taken.
    pub fn take_attached(&mut self) -> Option<AttachContainerResults> {
        self.attached
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Ids of the containers this backend owns.
#[derive(Debug, Clone, Default)]
pub(super) struct Live(Arc<Mutex<HashSet<String>>>);

impl Live {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
    /// Whether `id` is ours.
    pub fn contains(&self, id: &str) -> bool {
        self.set().contains(id)
    }
    fn insert(&self, id: &str) {
        self.set().insert(id.to_string());
    }
    fn remove(&self, id: &str) {
        self.set().remove(id);
    }
}

/// Makes and destroys sandboxes for one backend instance.
#[derive(Debug)]
pub(super) struct Factory {
    /// The engine.
    pub conn: Arc<Connection>,
    /// The pool's settings.
    pub settings: DockerSettings,
    /// The numeric user jobs run as.
    pub owner: (u32, u32),
    /// Whose containers these are.
    pub identity: Identity,
    /// The containers owned now.
    pub live: Live,
    /// Background removals and renames.
    pub removals: TaskTracker,
    /// The pool's metrics.
    pub metrics: BackendMetrics,
    /// The jobs running now.
    pub busy: Arc<Busy>,
    /// Used sandboxes whose removal waits for a quiet moment.
    pub reaper: Arc<Reaper>,
    serial: AtomicU64,
}

impl Factory {
    /// A factory; nothing is created yet.
    pub fn new(
        conn: Arc<Connection>,
        settings: DockerSettings,
        owner: (u32, u32),
        identity: Identity,
        metrics: BackendMetrics,
    ) -> Self {
        Self {
            conn,
            settings,
            owner,
            identity,
            live: Live::default(),
            removals: TaskTracker::new(),
            metrics,
            busy: Arc::default(),
            reaper: Arc::default(),
            serial: AtomicU64::new(0),
        }
    }

    /// Creates and starts a container of `shape` with `resources`, for `job` (id, tenant) or
    /// warm when `None`.
    pub async fn create(
        self: &Arc<Self>,
        shape: &Shape,
        resources: &Resources,
        job: Option<(&str, &str)>,
    ) -> Result<Sandbox, BackendError> {
        self.conn.engine().await?;
        let docker = self.conn.docker();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let name = format!("openshell-{}-{serial}", self.identity.instance);
        let body = spec::container(
            &self.settings,
            self.owner,
            shape,
            resources,
            self.identity.labels(job),
        );
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let mut claim = Claim {
            factory: Arc::clone(self),
            target: name.clone(),
            deferred: false,
        };
        let created = docker
            .create_container(Some(options), body)
            .await
            .map_err(|failure| match error::failure(&failure) {
                Failure::NotFound => error::image_missing(&shape.image, self.conn.endpoint()),
                _ => self.conn.fail(
                    "creating a container",
                    &format!("image {}", shape.image),
                    &failure,
                ),
            })?;
        self.live.insert(&created.id);
        claim.target.clone_from(&created.id);
        // Attached before it starts, as `docker run` does: the runner's first word is not lost.
        let attach = AttachContainerOptionsBuilder::new()
            .stream(true)
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .build();
        let attached = match docker.attach_container(&created.id, Some(attach)).await {
            Ok(attached) => attached,
            Err(failure) => {
                return Err(self.conn.fail(
                    "attaching to the container",
                    &format!("container {} image {}", short(&created.id), shape.image),
                    &failure,
                ));
            }
        };
        if let Err(failure) = docker.start_container(&created.id, None).await {
            return Err(self.conn.fail(
                "starting the container",
                &format!("container {} image {}", short(&created.id), shape.image),
                &failure,
            ));
        }
        let meter = Meter::of(docker, &created.id).await;
        let baseline = match meter {
            Meter::Cgroup(_) => measure::usage(docker, &created.id, &meter).await,
            Meter::Api => Usage::default(),
        };
        tracing::debug!(container = %created.id, %name, image = %shape.image, warm = job.is_none(), "sandbox started");
        Ok(Sandbox {
            _claim: claim,
            id: created.id,
            name,
            shape: shape.clone(),
            resources: *resources,
            meter,
            baseline,
            attached: Mutex::new(Some(attached)),
        })
    }

    /// Renames a warm sandbox after the job it now runs, so `docker ps` shows which (labels
    /// cannot change after creation). In the background, best effort: it must not delay the job.
    pub fn name_after(&self, sandbox: &Sandbox, job: &str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let slug: String = job
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
                _ => '_',
            })
            .take(64)
            .collect();
        let name = format!("{}-job-{slug}", sandbox.name);
        let (conn, id) = (Arc::clone(&self.conn), sandbox.id.clone());
        let rename = async move {
            let options = RenameContainerOptionsBuilder::new().name(&name).build();
            if let Err(failure) = conn.docker().rename_container(&id, options).await {
                tracing::debug!(container = %id, "could not rename the sandbox to {name}: {failure}");
            }
        };
        self.removals.spawn_on(rename, &runtime);
    }

    /// SIGKILLs every process of container `id` and waits until the engine sees it stopped.
    /// Returns whether the engine recorded an out-of-memory kill in it.
    pub async fn kill(&self, id: &str) -> Result<bool, BackendError> {
        let docker = self.conn.docker();
        let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        if let Err(failure) = docker.kill_container(id, Some(options)).await {
            // 409: it is already stopped, which is what we want.
            if error::failure(&failure) != Failure::Conflict {
                return Err(self.conn.fail(
                    "killing the container",
                    &format!("container {}", short(id)),
                    &failure,
                ));
            }
        }
        let give_up = tokio::time::Instant::now() + STOP_WAIT;
        loop {
            let inspect = docker
                .inspect_container(id, None)
                .await
                .map_err(|failure| {
                    self.conn.fail(
                        "inspecting the container",
                        &format!("container {}", short(id)),
                        &failure,
                    )
                })?;
            let state = inspect.state.unwrap_or_default();
            if state.running != Some(true) || tokio::time::Instant::now() >= give_up {
                return Ok(state.oom_killed == Some(true));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGKILLs container `id` in the background (its removal comes later).
    fn stop_later(&self, id: &str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (conn, id) = (Arc::clone(&self.conn), id.to_string());
        let stop = async move {
            let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
            if let Err(failure) = conn.docker().kill_container(&id, Some(options)).await {
                tracing::debug!(container = %id, "could not stop a used sandbox before its removal: {failure}");
            }
        };
        self.removals.spawn_on(stop, &runtime);
    }

    /// Removes container `id` (or name; killing it if needed) in the background. Outside a
    /// runtime (the process is ending) it is left to the backend's drop or the next sweep.
    fn destroy_later(&self, id: &str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (conn, live, id) = (Arc::clone(&self.conn), self.live.clone(), id.to_string());
        self.removals
            .spawn_on(async move { destroy(&conn, &live, &id).await }, &runtime);
    }
}

/// Removes container `id`, killing it if it runs; an already removed container is fine.
pub(super) async fn destroy(conn: &Connection, live: &Live, id: &str) {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match conn.docker().remove_container(id, Some(options)).await {
        Ok(()) => live.remove(id),
        // 404: already gone; 409: already being removed (by the shutdown sweep, say).
        Err(failure)
            if matches!(
                error::failure(&failure),
                Failure::NotFound | Failure::Conflict
            ) =>
        {
            live.remove(id);
        }
        Err(failure) => {
            conn.note(&failure);
            // No longer in use: the orphan sweep removes it once the daemon lets it.
            live.remove(id);
            tracing::warn!(
                container = id,
                endpoint = conn.endpoint(),
                "could not remove a sandbox container: {}; the orphan sweep will retry",
                error::describe(&failure)
            );
        }
    }
}

/// The first 12 characters of a container id, as `docker ps` shows it.
pub(super) fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
