//! The Docker backend (`SANDBOX_BACKEND=docker`): a fresh hardened container per job.
//!
//! Every job runs in a container no other job has used, destroyed when the job ends: network
//! `none`, read-only root filesystem, size-limited tmpfs for the working directory and `/tmp`,
//! `cap_drop ALL`, `no-new-privileges`, a non-root user, an init, a pids limit, memory with
//! swap equal, nano CPUs, nofile ulimit, no mounts, labels naming the worker and the job.
//!
//! A container start costs hundreds of milliseconds, so a warm pool keeps started containers
//! per image (`pool`), each running a resident `runner` as its main process, attached and
//! waiting on stdin for one job: a job is a frame written to it (`attach`; the `command`
//! prologue unpacks its files), with no exec API call, and a background task starts the
//! replacement. Limits Docker fixes at
//! creation key the pool; cgroup limits are updated per job (`spec`). Stops kill the whole
//! container; `verdict` says how the job ended and how each limit was enforced; `cleanup`
//! removes orphaned containers at start-up and periodically.
//!
//! Per job: `job::prepare` → `attach::supervise` → `job::conclude` → removal in the background,
//! after a clean end at a moment no job runs (`quiet`), so the daemon's work keeps out of the
//! jobs' way.

mod attach;
mod cgroup;
mod cleanup;
mod collect;
mod command;
mod connect;
mod demand;
mod error;
mod exec;
mod job;
mod labels;
mod measure;
mod pool;
mod quiet;
mod runner;
mod sandbox;
mod session;
pub mod settings;
mod spec;
mod verdict;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use openshell_protocol::ErrorKind;
use tokio_util::sync::CancellationToken;

pub use settings::DockerSettings;

use self::command::Command;
use self::connect::Connection;
use self::labels::Identity;
use self::pool::WarmPools;
use self::sandbox::Factory;
use self::spec::{Resources, Shape};
use openshell_backend::{
    Backend, BackendError, BackendEvent, Capabilities, Ending, Execution, Job, JobControl,
    PoolContext,
};

/// How long the backend's containers may take to be removed when it is dropped.
const REMOVE_ON_DROP: Duration = Duration::from_secs(15);
/// How often an unreachable daemon is tried again in the background.
const RECONNECT_EVERY: Duration = Duration::from_secs(5);

/// Runs each job in a fresh hardened container. Dropping it removes its containers.
#[derive(Debug)]
pub struct DockerBackend {
    factory: Arc<Factory>,
    pools: Arc<WarmPools>,
    /// Image of each language that names one; others use the settings' image.
    images: BTreeMap<String, String>,
    stop: CancellationToken,
}

impl DockerBackend {
    /// The backend of `pool` with `settings`: validates them and starts the background work
    /// (connecting, orphan sweeps, warm pools of the pool's default shape). Needs a Tokio
    /// runtime; does not need the daemon, which may come up later.
    pub fn new(settings: DockerSettings, pool: &PoolContext) -> Result<Self, BackendError> {
        let name = pool.name.as_str();
        validate(&settings)?;
        let owner = spec::user_ids(&settings)?;
        let conn = Arc::new(Connection::new(&settings)?);
        let identity = Identity::new(name, &settings.labels);
        let images: BTreeMap<String, String> = pool
            .languages
            .iter()
            .filter_map(|(language, spec)| Some((language.clone(), spec.image.clone()?)))
            .collect();
        let warm_images: BTreeSet<&String> = images.values().chain([&settings.image]).collect();
        let shapes = warm_images.into_iter().map(|image| {
            (
                Shape::for_job(image, &pool.defaults, false, &settings),
                Resources::for_limits(&pool.defaults, &settings),
            )
        });
        let pools = Arc::new(WarmPools::new(
            pool.metrics.clone(),
            shapes,
            settings.warm_pool,
            pool.slots,
        ));
        let factory = Arc::new(Factory::new(
            conn,
            settings,
            owner,
            identity,
            pool.metrics.clone(),
        ));
        let backend = Self {
            factory,
            pools,
            images,
            stop: CancellationToken::new(),
        };
        backend.pools.spawn_refills(&backend.factory, &backend.stop);
        let factory = &backend.factory;
        tokio::spawn(Arc::clone(&factory.reaper).run(
            Arc::clone(&factory.conn),
            factory.live.clone(),
            Arc::clone(&factory.busy),
            backend.stop.clone(),
        ));
        tokio::spawn(maintain(
            Arc::clone(&backend.factory),
            Arc::clone(&backend.pools),
            backend.stop.clone(),
        ));
        Ok(backend)
    }

    fn image_for(&self, job: &Job) -> &str {
        job.language
            .as_ref()
            .and_then(|language| self.images.get(language))
            .unwrap_or(&self.factory.settings.image)
    }

    async fn check_image(&self, image: &str) -> Result<(), BackendError> {
        let conn = &self.factory.conn;
        match conn.docker().inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(failure) if error::failure(&failure) == error::Failure::NotFound => {
                Err(error::image_missing(image, conn.endpoint()))
            }
            Err(failure) => {
                Err(conn.fail("looking up the image", &format!("image {image}"), &failure))
            }
        }
    }
}

fn validate(settings: &DockerSettings) -> Result<(), BackendError> {
    let bad = |key: &str, reason: &str| {
        error::error(
            ErrorKind::Internal,
            format!("[pools.NAME.docker] {key}"),
            reason.to_string(),
        )
    };
    if settings.image.trim().is_empty() {
        return Err(bad(
            "image",
            "no image: set SANDBOX_DOCKER_IMAGE or [pools.NAME.docker] image",
        ));
    }
    let workdir = settings.workdir.as_str();
    if !workdir.starts_with('/')
        || matches!(
            workdir.trim_end_matches('/'),
            "" | "/tmp" | "/proc" | "/dev"
        )
    {
        return Err(bad(
            "workdir",
            "must be an absolute path of its own, such as /workspace",
        ));
    }
    if settings.sweep_interval.millis() == 0 || settings.api_timeout.millis() == 0 {
        return Err(bad("sweep_interval / api_timeout", "must be longer than 0"));
    }
    Ok(())
}

/// Connects (and reconnects), sweeps orphans, and drains warm pools whose containers died.
async fn maintain(factory: Arc<Factory>, pools: Arc<WarmPools>, stop: CancellationToken) {
    loop {
        let wait = match cleanup::sweep(&factory).await {
            Ok(swept) => {
                if swept.dead_ours > 0 {
                    tracing::info!(
                        dead = swept.dead_ours,
                        "sandbox containers died (daemon restart?); refilling the warm pools"
                    );
                    pools.drain(None);
                }
                factory.settings.sweep_interval.as_duration()
            }
            Err(error) => {
                tracing::debug!("orphan sweep skipped: {error}");
                RECONNECT_EVERY
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
    }
}

#[async_trait]
impl Backend for DockerBackend {
    fn kind(&self) -> &'static str {
        error::KIND
    }

    fn capabilities(&self) -> Capabilities {
        verdict::capabilities(self.factory.conn.last_known().as_deref())
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.factory.conn.engine().await?;
        let images: BTreeSet<&String> = self
            .images
            .values()
            .chain([&self.factory.settings.image])
            .collect();
        for image in images {
            self.check_image(image).await?;
        }
        Ok(())
    }

    async fn execute(&self, job: Job, control: JobControl) -> Result<Execution, BackendError> {
        let factory = &self.factory;
        let _running = factory.busy.enter();
        let settings = &factory.settings;
        let engine = factory.conn.engine().await?;
        if control.cancel.is_cancelled() {
            return Ok(cancelled(&job, &engine));
        }
        if let Some(limit) = verdict::check_engine(&job.limits, &engine) {
            return Err(error::error(
                ErrorKind::LimitNotEnforceable,
                format!("engine {}", engine.version),
                format!(
                    "the Docker engine came back without the cgroup controller for `{limit}`; the job \
                     was not run: enable the controller on the host or drop the limit"
                ),
            ));
        }
        let command = command::command(&job, settings, factory.owner)?;
        let mut shape = Shape::for_job(self.image_for(&job), &job.limits, job.network, settings);
        shape.egress = job.egress.clone();
        let resources = Resources::for_limits(&job.limits, settings);
        let prepare = job::prepare(factory, &self.pools, &job, (&shape, &resources));
        let asked = Instant::now();
        // Starting a cold container takes a while: a cancellation must not wait for it.
        let (mut sandbox, attached) = tokio::select! {
            prepared = prepare => prepared?,
            () = control.cancel.cancelled() => return Ok(cancelled(&job, &engine)),
        };
        factory.metrics.record(BackendEvent::SandboxStarted {
            took: asked.elapsed(),
        });
        log_exec(&job, &sandbox.id, &shape.image, settings, &command);
        let timeout = job.limits.timeout.map(|timeout| timeout.as_duration());
        let nonce = runner::nonce();
        let frame = runner::frame(&command, &nonce);
        let input = (command.prologue_input.as_slice(), job.stdin.as_bytes());
        let supervised =
            attach::supervise(attached, (&frame, input), &nonce, timeout, &control).await;
        let clean = matches!(supervised.stop, attach::Stop::Ended { escaped: false, .. });
        let execution = job::conclude(factory, &job, &sandbox, supervised, &engine, &control).await;
        log_outcome(&job, &sandbox.id, &execution, &control);
        if clean && execution.is_ok() {
            // Its runner killed what the job left: the removal can wait until no job runs.
            sandbox.remove_when_quiet();
        }
        execution
    }

    fn sessions(&self) -> Option<&dyn openshell_backend::SessionBackend> {
        Some(self)
    }
}

/// A job cancelled before its program started.
fn cancelled(job: &Job, engine: &connect::Engine) -> Execution {
    Execution {
        ending: Ending::Cancelled,
        exit_code: None,
        enforcement: verdict::report(&job.limits, engine),
        ..Execution::exited(0)
    }
}

/// The exact exec, at debug level.
fn log_exec(job: &Job, container: &str, image: &str, settings: &DockerSettings, command: &Command) {
    tracing::debug!(
        job = %job.id,
        container,
        image,
        user = %settings.user,
        workdir = %settings.workdir,
        cmd = ?command.cmd,
        env = ?command.env,
        files_tar_bytes = command.prologue_input.len(),
        stdin_bytes = job.stdin.len(),
        "docker backend: job handed to the runner"
    );
}

fn log_outcome(
    job: &Job,
    container: &str,
    execution: &Result<Execution, BackendError>,
    control: &JobControl,
) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let output = control.output.snapshot();
    match execution {
        Ok(execution) => tracing::debug!(
            job = %job.id,
            container,
            ending = ?execution.ending,
            exit_code = ?execution.exit_code,
            signal = ?execution.signal,
            wall_ms = execution.wall_time.as_millis(),
            stdout = %String::from_utf8_lossy(&output.stdout),
            stderr = %String::from_utf8_lossy(&output.stderr),
            "docker backend: job ended; raw output"
        ),
        Err(error) => {
            tracing::debug!(job = %job.id, container, %error, "docker backend: job failed")
        }
    }
}

impl Drop for DockerBackend {
    fn drop(&mut self) {
        self.stop.cancel();
        self.pools.close();
        let conn = &self.factory.conn;
        cleanup::remove_instance_blocking(
            conn.endpoint().to_string(),
            self.factory.identity.instance.clone(),
            REMOVE_ON_DROP,
        );
    }
}
