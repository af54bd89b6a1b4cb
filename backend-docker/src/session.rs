//! Sessions on Docker: one hardened container held for the whole session, jobs exec'd into it.
//!
//! The container is made exactly like a job's (`Factory::create`, same spec and labels, the
//! session id in the job label), with the session's limits for the whole container: memory,
//! processes, cpus and the tmpfs size. Each job is an exec with the usual prologue (its files
//! unpacked into the kept working directory, its rlimits) under its own wall timeout. A stopped
//! job cannot be killed through its exec, so [`SandboxSession::reset`] kills every process of
//! the sandbox user but the container's init and keep-alive `sleep`, whose pid is read when the
//! session opens; the files stay. Closing removes the container and waits for it.

use std::sync::Arc;

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures::StreamExt;
use openshell_protocol::ErrorKind;
use tokio::sync::Mutex;

use super::attach::Stop;
use super::error::Failure;
use super::exec;
use super::measure;
use super::sandbox::{self, Factory, Sandbox, short};
use super::spec::{Resources, Shape};
use super::{DockerBackend, collect, command, error, verdict};
use openshell_backend::session::RESET_WAIT;
use openshell_backend::{
    BackendError, Ending, Execution, Job, JobControl, SandboxSession, SessionBackend, SessionSpec,
};

/// One session's container.
struct DockerSession {
    factory: Arc<Factory>,
    /// `None` once closed.
    sandbox: Mutex<Option<Sandbox>>,
    container: String,
    /// Pid (inside the container) of the keep-alive `sleep`, spared by resets.
    keeper: String,
}

#[async_trait]
impl SessionBackend for DockerBackend {
    async fn open(&self, spec: SessionSpec) -> Result<Box<dyn SandboxSession>, BackendError> {
        let factory = &self.factory;
        let settings = &factory.settings;
        let engine = factory.conn.engine().await?;
        if let Some(limit) = verdict::check_engine(&spec.limits, &engine) {
            return Err(error::error(
                ErrorKind::LimitNotEnforceable,
                format!("engine {}", engine.version),
                format!("the Docker engine has no cgroup controller for `{limit}`: drop the limit"),
            ));
        }
        let shape = Shape::for_job(&settings.image, &spec.limits, false, settings);
        let resources = Resources::for_limits(&spec.limits, settings);
        let sandbox = factory
            .create(&shape, &resources, Some((&spec.id, &spec.tenant)))
            .await?;
        let container = sandbox.id.clone();
        let (children, _) = capture(factory, &container, "cat /proc/1/task/1/children").await?;
        let keeper = children.split_whitespace().next().unwrap_or("").to_string();
        if keeper.is_empty() {
            return Err(error::error(
                ErrorKind::SandboxStartFailed,
                format!("container {}", short(&container)),
                "the session's container has no keep-alive process: it cannot be reset safely"
                    .to_string(),
            ));
        }
        tracing::info!(session = %spec.id, tenant = %spec.tenant, container = %container, "docker session opened");
        Ok(Box::new(DockerSession {
            factory: Arc::clone(factory),
            sandbox: Mutex::new(Some(sandbox)),
            container,
            keeper,
        }))
    }
}

#[async_trait]
impl SandboxSession for DockerSession {
    fn describe(&self) -> String {
        format!("container {}", short(&self.container))
    }

    async fn execute(&self, job: Job, control: JobControl) -> Result<Execution, BackendError> {
        let guard = self.sandbox.lock().await;
        let Some(sandbox) = guard.as_ref() else {
            return Err(self.closed());
        };
        let factory = &self.factory;
        let settings = &factory.settings;
        let docker = factory.conn.docker();
        let engine = factory.conn.engine().await?;
        let command = command::command(&job, settings, factory.owner)?;
        let before = measure::usage(docker, &sandbox.id, &sandbox.meter).await;
        let exec = exec::create(
            docker,
            &sandbox.id,
            &command,
            &settings.user,
            &settings.workdir,
        )
        .await
        .map_err(|failure| self.exec_failed(&failure))?;
        let timeout = job.limits.timeout.map(|timeout| timeout.as_duration());
        let input = (command.prologue_input.as_slice(), job.stdin.as_bytes());
        let supervised = exec::supervise(docker, &exec, input, timeout, &control)
            .await
            .map_err(|failure| {
                factory
                    .conn
                    .fail("starting the job's exec", &self.describe(), &failure)
            })?;
        let (ending, exit_code) = match supervised.stop {
            Stop::Timeout | Stop::Cancelled | Stop::OutputLimit => {
                let ending = match supervised.stop {
                    Stop::Timeout => Ending::Timeout,
                    Stop::Cancelled => Ending::Cancelled,
                    _ => Ending::OutputLimit,
                };
                drop(guard);
                self.reset().await?;
                (ending, None)
            }
            Stop::Broken(failure) => {
                return Err(error::error(
                    ErrorKind::SandboxLost,
                    self.describe(),
                    format!(
                        "lost the session's container while job `{}` ran ({}): the session is over",
                        job.id,
                        error::describe(&failure)
                    ),
                ));
            }
            Stop::Vanished => {
                return Err(error::error(
                    ErrorKind::SandboxLost,
                    self.describe(),
                    format!(
                        "the session's container went away while job `{}` ran: the session is over",
                        job.id
                    ),
                ));
            }
            Stop::Ended { exit_code, .. } => {
                let after = measure::usage(docker, &sandbox.id, &sandbox.meter).await;
                let oom = exit_code != Some(0) && after.oom_since(&before) == Some(true);
                (verdict::ending(exit_code, oom), exit_code)
            }
        };
        let files = match (&job.outputs, ending) {
            (Some(request), Ending::Exited) => {
                collect::collect(
                    docker,
                    &self.container,
                    &settings.user,
                    &settings.workdir,
                    request,
                )
                .await
            }
            _ => None,
        };
        let (exit_code, signal) = verdict::exit_and_signal(ending, exit_code);
        Ok(Execution {
            ending,
            exit_code,
            signal,
            wall_time: supervised.wall_time,
            cpu_time: None,
            peak_memory_bytes: None,
            enforcement: verdict::report(&job.limits, &engine),
            files,
        })
    }

    async fn reset(&self) -> Result<(), BackendError> {
        let script = format!(
            "for d in /proc/[0-9]*; do p=${{d#/proc/}}; case \" 1 {} $$ \" in *\" $p \"*) ;; *) kill -9 \"$p\" 2>/dev/null;; esac; done; rm -f /tmp/.openshell-kernel/*.sock",
            self.keeper
        );
        let reset = capture(&self.factory, &self.container, &script);
        match tokio::time::timeout(RESET_WAIT, reset).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(error::error(
                ErrorKind::SandboxLost,
                self.describe(),
                format!(
                    "killing the stopped job's processes took over {RESET_WAIT:?}: the session is over"
                ),
            )),
        }
    }

    async fn close(&self) -> Result<(), BackendError> {
        let sandbox = self.sandbox.lock().await.take();
        if let Some(sandbox) = sandbox {
            sandbox::destroy(&self.factory.conn, &self.factory.live, &sandbox.id).await;
            tracing::info!(container = %sandbox.id, "docker session closed; container removed");
        }
        Ok(())
    }
}

impl DockerSession {
    /// The job's exec could not be created: the daemon is unreachable, or (404, 409) the
    /// container is gone or stopped, which ends the session: `sandbox_lost`.
    fn exec_failed(&self, failure: &bollard::errors::Error) -> BackendError {
        let conn = &self.factory.conn;
        match error::failure(failure) {
            Failure::NotFound | Failure::Conflict => error::error(
                ErrorKind::SandboxLost,
                self.describe(),
                format!(
                    "the session's container is gone or stopped ({}): the session is over; open a new one",
                    error::describe(failure)
                ),
            ),
            _ => conn.fail("creating the job's exec", &self.describe(), failure),
        }
    }

    fn closed(&self) -> BackendError {
        error::error(
            ErrorKind::NotFound,
            self.describe(),
            "the session is closed".to_string(),
        )
    }
}

/// Runs `script` with `sh -c` in `container` as the sandbox user and returns its stdout and
/// exit code.
async fn capture(
    factory: &Factory,
    container: &str,
    script: &str,
) -> Result<(String, Option<i64>), BackendError> {
    let docker = factory.conn.docker();
    let fail = |doing: &str, failure: &bollard::errors::Error| {
        factory
            .conn
            .fail(doing, &format!("container {}", short(container)), failure)
    };
    let options = CreateExecOptions {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            script.to_string(),
        ]),
        user: Some(factory.settings.user.clone()),
        ..CreateExecOptions::default()
    };
    let exec = docker
        .create_exec(container, options)
        .await
        .map_err(|failure| fail("creating a session exec", &failure))?
        .id;
    let mut stdout = Vec::new();
    if let StartExecResults::Attached { mut output, .. } = docker
        .start_exec(&exec, None)
        .await
        .map_err(|failure| fail("starting a session exec", &failure))?
    {
        while let Some(frame) = output.next().await {
            if let Ok(LogOutput::StdOut { message }) = frame {
                stdout.extend_from_slice(&message);
            }
        }
    }
    let inspect = docker
        .inspect_exec(&exec)
        .await
        .map_err(|failure| fail("inspecting a session exec", &failure))?;
    Ok((
        String::from_utf8_lossy(&stdout).into_owned(),
        inspect.exit_code,
    ))
}
