//! One job in one container: take a warm sandbox (or start a cold one), hand the job to its
//! resident runner,
//! stop it by killing the container, read what it used and how it ended, then destroy it.

use std::sync::Arc;

use bollard::container::AttachContainerResults;
use bollard::errors::Error as ApiError;
use openshell_protocol::ErrorKind;

use super::attach::{self, Stop, Supervised};
use super::collect;
use super::connect::Engine;
use super::error;
use super::measure::{self, Usage};
use super::pool::{Taken, WarmPools};
use super::sandbox::{Factory, Sandbox, short};
use super::spec::{self, Fit, Resources, Shape};
use super::verdict;
use openshell_backend::BackendEvent;
use openshell_backend::{BackendError, Ending, Execution, Job, JobControl, Stream as OutputStream};

/// The exit status of a container whose init could not start the runner: command not found.
const RUNNER_NOT_FOUND: i64 = 127;

/// A sandbox for `job` with its runner's connection: warm when one fits, else cold.
pub(super) async fn prepare(
    factory: &Arc<Factory>,
    pools: &WarmPools,
    job: &Job,
    (shape, resources): (&Shape, &Resources),
) -> Result<(Sandbox, AttachContainerResults), BackendError> {
    if let Some((mut sandbox, waited)) = warm(factory, pools, shape, resources).await {
        if let Some(mut attached) = sandbox.take_attached()
            && attach::is_waiting(&mut attached)
        {
            if waited {
                pools.missed();
            } else {
                pools.hit();
            }
            factory.name_after(&sandbox, &job.id);
            return Ok((sandbox, attached));
        }
        tracing::info!(container = %sandbox.id, "a warm sandbox's runner is gone; draining its pool and starting a fresh one");
        pools.drain(Some(shape));
    }
    pools.missed();
    let mut sandbox = factory
        .create(shape, resources, Some((&job.id, &job.tenant)))
        .await?;
    let attached = sandbox.take_attached().ok_or_else(|| {
        error::error(
            ErrorKind::Internal,
            container(&sandbox.id),
            "a new sandbox came without its runner's connection",
        )
    })?;
    Ok((sandbox, attached))
}

/// A warm sandbox of `shape` set to `resources`, if one is (or soon will be) ready and can be;
/// with whether the job waited for it.
async fn warm(
    factory: &Factory,
    pools: &WarmPools,
    shape: &Shape,
    resources: &Resources,
) -> Option<(Sandbox, bool)> {
    let (mut sandbox, waited) = match pools.take(shape).await? {
        Taken::Ready(sandbox) => (sandbox, false),
        Taken::Waited(sandbox) => (sandbox, true),
    };
    match spec::fit(&sandbox.resources, resources) {
        Fit::Same => Some((sandbox, waited)),
        Fit::Mismatch => {
            // Unused: back to the pool, or (pool full) dropped, which removes it.
            let _ = pools.put_back(sandbox);
            None
        }
        Fit::Update(update) => match factory
            .conn
            .docker()
            .update_container(&sandbox.id, *update)
            .await
        {
            Ok(()) => {
                sandbox.resources = *resources;
                Some((sandbox, waited))
            }
            Err(failure) => {
                tracing::debug!(container = %sandbox.id, "cannot update a warm sandbox's limits ({failure}); starting a fresh one");
                None
            }
        },
    }
}

/// How the supervised exec ended, with what it used; the container is stopped when the job
/// was, or when it failed (to read the engine's out-of-memory verdict).
pub(super) async fn conclude(
    factory: &Arc<Factory>,
    job: &Job,
    sandbox: &Sandbox,
    supervised: Supervised,
    engine: &Engine,
    control: &JobControl,
) -> Result<Execution, BackendError> {
    let docker = factory.conn.docker();
    let id = sandbox.id.as_str();
    let Supervised { stop, wall_time } = supervised;
    let meter = &sandbox.meter;
    let mut files = None;
    let (ending, exit_code, usage) = match stop {
        Stop::Timeout | Stop::Cancelled | Stop::OutputLimit => {
            // Only an instant read comes before the kill; stopping must not wait for stats.
            let usage = if meter.is_local() {
                measure::usage(docker, id, meter).await
            } else {
                Usage::default()
            };
            factory.kill(id).await.map_err(mid_run)?;
            (stopped(&stop), None, usage)
        }
        Stop::Broken(failure) => return Err(lost(factory, job, id, &failure)),
        Stop::Vanished => {
            // A daemon that answers for the container saw it die under the job: no exit code,
            // as a killed exec had none. One that does not answer is the daemon gone.
            let state = match docker.inspect_container(id, None).await {
                Ok(inspect) => inspect.state.unwrap_or_default(),
                Err(failure) => return Err(lost(factory, job, id, &failure)),
            };
            // The runner never exits 127 itself: that is the init (or the runner's last
            // `exec sleep`) not finding a program the image lacks.
            if state.running != Some(true) && state.exit_code == Some(RUNNER_NOT_FOUND) {
                let said = control.output.snapshot().stderr;
                return Err(error::runner_unsupported(
                    &sandbox.shape.image,
                    &container(id),
                    &String::from_utf8_lossy(&said),
                ));
            }
            let usage = measure::usage(docker, id, meter).await;
            let oom_killed = factory.kill(id).await.unwrap_or(false);
            (verdict::ending(None, oom_killed), None, usage)
        }
        Stop::Ended { exit_code, escaped } => {
            let usage = measure::usage(docker, id, meter).await;
            if let Some(request) = &job.outputs {
                let settings = &factory.settings;
                files =
                    collect::collect(docker, id, &settings.user, &settings.workdir, request).await;
            }
            if escaped {
                tracing::warn!(job = %job.id, container = id, "output was still open 1s after the job's program exited");
                control.output.write(
                    OutputStream::Stderr,
                    b"openshell: output was still open 1s after the program exited (a background process?); \
                      it was killed and the output may be incomplete\n",
                );
            }
            let oom_killed = match (exit_code, usage.oom_since(&sandbox.baseline)) {
                (Some(0), _) => false,
                (_, Some(counted)) => counted,
                // The engine records an OOM kill in the container's state once it stops.
                (_, None) => factory.kill(id).await.unwrap_or(false),
            };
            (verdict::ending(exit_code, oom_killed), exit_code, usage)
        }
    };
    if usage.pids_limit_hit_since(&sandbox.baseline) == Some(true) {
        // Only the cgroup meter reads `pids.events`; with a remote engine this is not told.
        factory
            .metrics
            .record(BackendEvent::LimitHit { limit: "processes" });
    }
    let stderr = control.output.snapshot().stderr;
    if ending == Ending::Exited && verdict::prologue_failed(exit_code, &stderr) {
        return Err(error::error(
            ErrorKind::SandboxStartFailed,
            container(id),
            format!(
                "Docker sandbox failed to start: the job could not be prepared in its container: {}",
                String::from_utf8_lossy(&stderr).trim()
            ),
        ));
    }
    let (exit_code, signal) = verdict::exit_and_signal(ending, exit_code);
    Ok(Execution {
        ending,
        exit_code,
        signal,
        wall_time,
        cpu_time: usage.cpu_since(&sandbox.baseline),
        peak_memory_bytes: usage.peak_bytes,
        enforcement: verdict::report(&job.limits, engine),
        files,
    })
}

fn stopped(stop: &Stop) -> Ending {
    match stop {
        Stop::Timeout => Ending::Timeout,
        Stop::Cancelled => Ending::Cancelled,
        _ => Ending::OutputLimit,
    }
}

/// A failure after the job's program started: the job did run, so it is not "never started".
fn mid_run(mut error: BackendError) -> BackendError {
    if error.kind == ErrorKind::ConnectionFailed {
        error.kind = ErrorKind::SandboxLost;
    }
    error
}

/// The daemon went away (or restarted) while the job ran.
fn lost(factory: &Factory, job: &Job, id: &str, failure: &ApiError) -> BackendError {
    factory.conn.note(failure);
    error::error(
        ErrorKind::SandboxLost,
        format!("{} {}", factory.conn.endpoint(), container(id)),
        format!(
            "lost the Docker daemon while job `{}` ran ({}); the job's processes died with its container: \
             resubmit the job once the daemon is back",
            job.id,
            error::describe(failure)
        ),
    )
}

fn container(id: &str) -> String {
    format!("container {}", short(id))
}
