//! Sessions on the local backend: one bubblewrap sandbox held for the whole session, each job
//! entered into it.
//!
//! Opening a session makes a working directory and cgroups (the session's memory, processes
//! and cpus, for every process of the sandbox together) and starts a sandbox exactly like a
//! job's (`sandbox`), whose program is a keep-alive that says it is up and sleeps. Each job
//! then starts `nsenter` into the namespaces of that sandbox's pid 1 (`sandbox::enter`), in the
//! session's cgroups, where the sandbox's init, as the job's own process, writes the job's
//! files as the job's user, drops to it, sets the job's rlimits, loads the sandbox's seccomp
//! filter and execs the program, under the job's own timeout and output limit. What a job
//! leaves running (a kernel) lives on in the sandbox, its pid 1 reaping it. A stopped job is
//! followed by [`SandboxSession::reset`]: every process of the sandbox but pid 1 and the
//! keep-alive is killed, through pidfds of processes checked to be in its pid namespace.
//! Closing kills the whole sandbox, waits until none of its processes is left, and removes its
//! cgroups and working directory. Sessions need the bubblewrap sandbox: without it there is no
//! sandbox to hold, and the backend offers none.

use std::fs;
use std::time::Duration;

use async_trait::async_trait;
use nix::unistd::Pid;
use openshell_protocol::{EnforcementReport, ErrorKind, Limits};
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

use self::procs::{child_of, is_zombie, kill_round, namespace_of};
use super::cgroup::{Controller, Hierarchies, JobCgroup};
use super::child::{self, Process, Setup, Spawned};
use super::sandbox::{NSENTER, Sandbox};
use super::supervise::{self, Finished};
use super::uids::{self, Lease};
use super::user::RunAs;
use super::workdir::Workdir;
use super::{KIND, LocalBackend, Memory, collect_files, note_escape, refine, rlimits, verdict};
use openshell_backend::session::RESET_WAIT;
use openshell_backend::{
    BackendError, Ending, Execution, Job, JobControl, SandboxSession, SessionBackend, SessionSpec,
};

/// The keep-alive of a session's sandbox: says it is up, then sleeps until the session ends.
const KEEPER: &str = "echo ready; exec sleep infinity </dev/null >/dev/null 2>&1";

/// How long a session's sandbox may take to come up.
const START_WAIT: Duration = Duration::from_secs(10);

/// How often the sandbox's processes are listed while they are being killed.
const KILL_POLL: Duration = Duration::from_millis(20);

/// The end of a failed sandbox's stderr quoted in the error.
const START_ERROR_BYTES: usize = 512;

/// One session's sandbox.
struct LocalSession {
    backend: LocalBackend,
    sandbox: Sandbox,
    run_as: RunAs,
    /// Host pids of the sandbox's pid 1 and of its keep-alive, spared by resets.
    init: Pid,
    keeper: Pid,
    /// The sandbox's pid namespace, as `/proc/PID/ns/pid` reads (`pid:[INODE]`).
    namespace: String,
    /// `None` once closed.
    held: Mutex<Option<Held>>,
    /// The cgroups a job's report may name: not CPU accounting, since the session's cgroup
    /// counts every job's CPU time, so a job's `cpu_time` is RLIMIT_CPU per process only.
    reported: Hierarchies,
}

/// What a session owns until it closes.
struct Held {
    /// bubblewrap, the sandbox's parent on the host.
    bwrap: Process,
    workdir: Workdir,
    cgroup: Option<JobCgroup>,
    /// The session's uid, when the pool gives each sandbox its own.
    _lease: Option<Lease>,
}

#[async_trait]
impl SessionBackend for LocalBackend {
    async fn open(&self, spec: SessionSpec) -> Result<Box<dyn SandboxSession>, BackendError> {
        let Some(sandbox) = self.sandbox.clone() else {
            return Err(self.error(
                ErrorKind::SessionsUnsupported,
                "sessions on the local backend need its bubblewrap sandbox".to_string(),
            ));
        };
        if !std::path::Path::new(NSENTER).exists() {
            return Err(self.error(
                ErrorKind::SandboxStartFailed,
                format!("{NSENTER} is missing: install util-linux to run jobs in sessions"),
            ));
        }
        let lease = self.uids.as_ref().map(uids::UidPool::lease).transpose()?;
        let run_as = lease
            .as_ref()
            .map_or_else(|| self.run_as.clone(), Lease::run_as);
        let workdir = Workdir::create(&self.work_root, run_as.switch_to(), &[])?;
        let cgroup = if self.cgroups.is_empty() {
            None
        } else {
            Some(
                JobCgroup::create(&self.cgroups, &spec.limits).map_err(|failure| {
                    self.error(
                        ErrorKind::SandboxStartFailed,
                        format!("creating the session's cgroups failed: {failure}"),
                    )
                })?,
            )
        };
        let keeper = spec.keeper(["/bin/sh", "-c", KEEPER].map(String::from).to_vec());
        let env = workdir.env(&self.settings.path, &keeper.env);
        let launch = sandbox
            .launch(
                &keeper,
                workdir.path(),
                &run_as,
                &rlimits::plan(&Limits::default()),
                &env,
            )
            .map_err(|failure| {
                self.error(
                    ErrorKind::SandboxStartFailed,
                    format!("preparing the session's sandbox failed: {failure}"),
                )
            })?;
        let spawned = child::spawn(
            &launch.argv,
            &launch.env,
            workdir.path(),
            &Setup::sandbox(cgroup.as_ref()),
            launch.passed,
        )
        .map_err(|failure| {
            self.error(
                ErrorKind::SandboxStartFailed,
                format!("starting the session's sandbox failed: {failure:?}"),
            )
        })?;
        let (bwrap, init, keeper) = self.wait_until_up(spawned).await?;
        let namespace = namespace_of(init).map_err(|failure| {
            self.error(
                ErrorKind::SandboxStartFailed,
                format!("reading the session's pid namespace failed: {failure}"),
            )
        })?;
        tracing::info!(
            session = %spec.id,
            tenant = %spec.tenant,
            workdir = %workdir.path().display(),
            init = init.as_raw(),
            "local session opened"
        );
        Ok(Box::new(LocalSession {
            reported: self.cgroups.without(Controller::CpuAccounting),
            backend: self.clone(),
            sandbox,
            run_as,
            init,
            keeper,
            namespace,
            held: Mutex::new(Some(Held {
                bwrap,
                workdir,
                cgroup,
                _lease: lease,
            })),
        }))
    }
}

impl LocalBackend {
    /// Waits for the keep-alive's `ready`, and finds the host pids of the sandbox's pid 1
    /// (bubblewrap's child) and of the keep-alive (pid 1's child).
    async fn wait_until_up(&self, spawned: Spawned) -> Result<(Process, Pid, Pid), BackendError> {
        let Spawned {
            process,
            mut stdout,
            mut stderr,
            ..
        } = spawned;
        let mut line = Vec::new();
        let mut chunk = [0u8; 64];
        let up = tokio::time::timeout(START_WAIT, async {
            while !line.ends_with(b"ready\n") {
                match stdout.read(&mut chunk).await {
                    Ok(0) | Err(_) => return false,
                    Ok(read) => line.extend_from_slice(&chunk[..read]),
                }
            }
            true
        })
        .await
        .unwrap_or(false);
        let pids = if up {
            child_of(process.pid()).and_then(|init| Some((init, child_of(init)?)))
        } else {
            None
        };
        let Some((init, keeper)) = pids else {
            process.kill();
            let mut error = Vec::new();
            let _ = tokio::time::timeout(KILL_POLL * 10, stderr.read_to_end(&mut error)).await;
            let tail = &error[error.len().saturating_sub(START_ERROR_BYTES)..];
            return Err(self.error(
                ErrorKind::SandboxStartFailed,
                format!(
                    "the session's bubblewrap sandbox did not come up within {START_WAIT:?}; its stderr ends with: {}",
                    String::from_utf8_lossy(tail).trim()
                ),
            ));
        };
        Ok((process, init, keeper))
    }
}

#[async_trait]
impl SandboxSession for LocalSession {
    fn describe(&self) -> String {
        format!("local sandbox {}", self.init)
    }

    async fn execute(&self, job: Job, control: JobControl) -> Result<Execution, BackendError> {
        let guard = self.held.lock().await;
        let Some(held) = guard.as_ref() else {
            return Err(self.error(ErrorKind::NotFound, "the session is closed".to_string()));
        };
        if !self.alive() {
            return Err(self.lost());
        }
        if control.cancel.is_cancelled() {
            return Ok(Execution {
                ending: Ending::Cancelled,
                exit_code: None,
                enforcement: self.report(&job.limits),
                ..Execution::exited(0)
            });
        }
        let cgroup = held.cgroup.as_ref();
        let covered = |controller| cgroup.is_some_and(|cgroup| cgroup.has(controller));
        let rlimits = rlimits::beside(&job.limits, cgroup);
        let env = held.workdir.env(&self.backend.settings.path, &job.env);
        let entry = self
            .sandbox
            .enter(
                self.init,
                &job,
                held.workdir.path(),
                &self.run_as,
                &rlimits,
                &env,
            )
            .map_err(|failure| {
                self.error(
                    ErrorKind::InvalidRequest,
                    format!("the job cannot enter the session's sandbox: {failure}"),
                )
            })?;
        let oom_before = cgroup.map_or(0, JobCgroup::oom_kills);
        let spawned = child::spawn(
            &entry.argv,
            &entry.env,
            held.workdir.path(),
            &Setup::sandbox(cgroup),
            entry.passed,
        )
        .map_err(|failure| {
            self.error(
                ErrorKind::SandboxStartFailed,
                format!("starting {NSENTER} into the session's sandbox failed: {failure:?}"),
            )
        })?;
        let started = spawned.started;
        let timeout = job.limits.timeout.map(|timeout| timeout.as_duration());
        let Finished {
            ending,
            reaped,
            escaped,
            ..
        } = supervise::supervise(
            spawned,
            job.stdin.as_bytes().to_vec(),
            timeout,
            None,
            &control,
        )
        .await;
        if escaped {
            note_escape(&job, &control);
        }
        let reaped = reaped.map_err(|message| self.error(ErrorKind::Internal, message))?;
        if !self.alive() {
            // It died under the job (or before nsenter got in): nothing of the job counts.
            return Err(self.lost());
        }
        let oom_killed = cgroup.map_or(0, JobCgroup::oom_kills) > oom_before;
        let (exit_code, signal) = verdict::exit_of(reaped.status);
        let memory = Memory {
            cgroup: covered(Controller::Memory),
            oom_killed,
            peak_bytes: reaped.peak_memory_bytes,
        };
        let ending = refine(ending, &job, &control, (exit_code, signal), &memory);
        if matches!(
            ending,
            Ending::Timeout | Ending::Cancelled | Ending::OutputLimit
        ) {
            self.kill_all(&[self.init, self.keeper]).await?;
        }
        let files = match (&job.outputs, ending) {
            (Some(request), Ending::Exited | Ending::OutOfMemory) => {
                collect_files(held.workdir.path(), request).await
            }
            _ => None,
        };
        Ok(Execution {
            ending,
            exit_code,
            signal,
            wall_time: reaped.exited_at.saturating_duration_since(started),
            cpu_time: Some(reaped.cpu_time),
            peak_memory_bytes: Some(reaped.peak_memory_bytes),
            enforcement: self.report(&job.limits),
            files,
        })
    }

    async fn reset(&self) -> Result<(), BackendError> {
        self.kill_all(&[self.init, self.keeper]).await
    }

    async fn close(&self) -> Result<(), BackendError> {
        let Some(held) = self.held.lock().await.take() else {
            return Ok(());
        };
        // pid 1 first: the kernel then kills the rest of its namespace.
        let killed = self.kill_all(&[]).await;
        held.bwrap.kill();
        let _ = tokio::time::timeout(RESET_WAIT, held.bwrap.wait()).await;
        if let Some(cgroup) = held.cgroup {
            cgroup.remove().await;
        }
        let workdir = held.workdir;
        let _ = tokio::task::spawn_blocking(move || workdir.remove()).await;
        tracing::info!(
            init = self.init.as_raw(),
            "local session closed; sandbox and workdir removed"
        );
        killed
    }
}

impl LocalSession {
    /// SIGKILLs every process of the sandbox but `spared`, until none is left (zombies
    /// aside, which pid 1 reaps) or [`RESET_WAIT`] passed, which loses the session.
    async fn kill_all(&self, spared: &[Pid]) -> Result<(), BackendError> {
        let deadline = tokio::time::Instant::now() + RESET_WAIT;
        loop {
            let namespace = self.namespace.clone();
            let spared = spared.to_vec();
            let left = tokio::task::spawn_blocking(move || kill_round(&namespace, &spared))
                .await
                .unwrap_or(1);
            if left == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.error(
                    ErrorKind::SandboxLost,
                    format!(
                        "killing the session sandbox's processes took over {RESET_WAIT:?}: the session is over"
                    ),
                ));
            }
            tokio::time::sleep(KILL_POLL).await;
        }
    }

    /// Whether the sandbox's pid 1 still runs (and is still the sandbox's, not a reused pid).
    /// A dying pid 1 keeps its pid namespace until reaped, but has lost its other namespaces
    /// (what nsenter enters) already.
    fn alive(&self) -> bool {
        namespace_of(self.init).ok().as_deref() == Some(self.namespace.as_str())
            && fs::read_link(format!("/proc/{}/ns/mnt", self.init)).is_ok()
            && !is_zombie(self.init)
    }

    fn lost(&self) -> BackendError {
        self.error(
            ErrorKind::SandboxLost,
            "the session's sandbox is gone (its pid 1 ended): the session is over; open a new one"
                .to_string(),
        )
    }

    /// The enforcement report of a job in the session.
    fn report(&self, limits: &Limits) -> EnforcementReport {
        verdict::report(
            limits,
            &verdict::Enforcer {
                run_as: self.backend.identity(),
                sandboxed: true,
                cgroups: &self.reported,
            },
        )
    }

    fn error(&self, kind: ErrorKind, message: String) -> BackendError {
        BackendError::new(kind, KIND, self.describe(), message)
    }
}

mod procs;
#[cfg(test)]
mod tests;
