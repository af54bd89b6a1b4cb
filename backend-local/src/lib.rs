//! The local process backend (`SANDBOX_BACKEND=none`): jobs run as child processes of the worker.
//!
//! With bubblewrap (the worker is root, `bwrap` and perl are installed: see `sandbox`), each job
//! runs in a sandbox of its own: its own pid, mount, ipc, uts and network namespaces (only a
//! loopback interface), private /tmp, /var/tmp and /dev/shm, the host's /usr and /etc
//! read-only, no user namespaces or keyrings (seccomp), as the dedicated user `openshell-job`,
//! and the whole namespace is killed when the job's own process ends. It still shares the
//! host's kernel. Where the worker may write a cgroup hierarchy (v1 or v2), each sandboxed job
//! also gets cgroups of its own (`cgroup`): memory (tmpfs and shared memory included), pids,
//! CPU share and CPU time hold for all its processes together; elsewhere they are per-process
//! rlimits, and `cpus` cannot be enforced. The workdir's total size is never capped. With
//! `[pools.NAME.local] uids`, each running job has a uid of its own instead (`uids`), so its
//! process limit is its own too.
//!
//! **Without bubblewrap it is not a sandbox**, and says so at start-up and in each report
//! (`network` not enforced): a job runs as an unprivileged user (when the worker is root), in
//! its own session, under rlimits, in a private temporary directory, with a clean environment,
//! and its process group is killed when it ends; but it shares the host's filesystem, network
//! and other users' processes, and a descendant that calls `setsid` survives the job.
//!
//! Per job: `workdir` prepares the directory, `cgroup` makes its cgroups, `sandbox` (when there
//! is one) wraps the program in bubblewrap, `child` starts the process under its `rlimits` (through `launch`, a
//! `posix_spawn`-like clone that does not copy the worker) and reaps it, `supervise` moves stdin
//! and output and enforces the timeout, cancellation and output limit, `verdict` says how it
//! ended and what was enforced, and `remove` deletes the directory without following links.
//!
//! Sessions (`session`, with the sandbox only) hold one such sandbox across jobs, each job
//! entered into it (`sandbox::enter`).
//!
//! Without a memory cgroup, the memory limit is RLIMIT_DATA (private writable memory per process), which runtimes
//! that reserve address space up front, like Node's V8, start under; RLIMIT_AS would not let
//! them. A job whose allocations fail under it ends as `out_of_memory` by a heuristic (see
//! `verdict`), since the kernel reports a failed allocation, not a kill.
//!
//! A job is a few syscalls on the calling task and no thread hand-off: the directory is made
//! inline (for requests of small files), the process starts without `fork`, and its exit
//! arrives on a pidfd through the runtime's event loop. The directory is removed on a blocking
//! thread once the result is known, with at most [`PENDING_REMOVALS`] waiting. Needs Linux 5.4
//! or later (CLONE_PIDFD, and pidfds that can be polled and waited on); RLIMIT_DATA needs 4.7.
//! In a sandbox, bubblewrap and its perl pid 1 add a few milliseconds to each job.

mod cgroup;
mod child;
mod launch;
mod remove;
mod rlimits;
mod sandbox;
mod session;
mod stale;
mod supervise;
#[cfg(test)]
mod tests;
mod uids;
mod user;
mod verdict;
mod workdir;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use openshell_protocol::{EnforcementReport, ErrorKind, Limits};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use self::cgroup::{Controller, Hierarchies, JobCgroup};
use self::child::Reaped;
use self::child::{Setup, SpawnError};
pub use self::sandbox::SandboxMode;
use self::sandbox::{Detected, Sandbox, StatusPipe};
use self::supervise::{CpuBudget, Finished};
use self::uids::UidPool;
pub use self::uids::UidRange;
use self::user::RunAs;
use self::workdir::Workdir;
use openshell_backend::files;
use openshell_backend::{
    Backend, BackendError, Capabilities, Ending, Execution, Job, JobControl, Stream,
};
use openshell_backend::{CollectedFiles, FilesRequest};

/// The backend's kind, as in `SANDBOX_BACKEND`.
const KIND: &str = "none";

/// The end of a failed sandbox's stderr quoted in the error.
const SANDBOX_ERROR_BYTES: usize = 512;

/// Working directories that may wait for removal at once. Past this, a finished job waits for
/// one to go before it returns, so a slow disk slows the worker down rather than fill up.
pub const PENDING_REMOVALS: usize = 64;

/// The `[pools.NAME.local]` section: how the local backend runs jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalSettings {
    /// Run jobs as this user; when unset, `openshell-job` (created by `deploy/setup.sh`) if the
    /// worker is root, else the worker's user.
    pub user: Option<String>,
    /// Where per-job working directories go; the system temp directory when unset. On a
    /// tmpfs (e.g. `/dev/shm`) creating and removing them costs microseconds instead of the
    /// journal waits of a disk filesystem, but the files jobs write then live in memory.
    pub work_root: Option<PathBuf>,
    /// PATH given to jobs.
    pub path: String,
    /// Whether each job runs in a bubblewrap sandbox (its own pid, mount, ipc, uts and network
    /// namespaces): `auto` (default: when the worker is root and bubblewrap is installed),
    /// `required` or `off`.
    pub sandbox: SandboxMode,
    /// A uid of its own for each running job, from this range (e.g. `{ first = 1900000000,
    /// count = 64 }`), instead of `user`: needs the sandbox, and uids no account of the host uses.
    pub uids: Option<UidRange>,
}

impl Default for LocalSettings {
    fn default() -> Self {
        Self {
            user: None,
            work_root: None,
            path: "/usr/local/bin:/usr/bin:/bin".to_string(),
            sandbox: SandboxMode::default(),
            uids: None,
        }
    }
}

/// Runs jobs as local processes under rlimits, each in a bubblewrap sandbox where it can.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    settings: LocalSettings,
    run_as: RunAs,
    /// The sandbox each job runs in; `None`: plain processes, which is not a sandbox.
    sandbox: Option<Sandbox>,
    /// The cgroup hierarchies each sandboxed job gets a cgroup in (empty without a sandbox).
    cgroups: Hierarchies,
    /// Per-job uids, when the pool has a range.
    uids: Option<Arc<UidPool>>,
    work_root: PathBuf,
    /// One permit per working directory that may be waiting for removal.
    removals: Arc<Semaphore>,
}

impl LocalBackend {
    /// A backend for `settings`; fails when the run-as user cannot be used.
    pub fn new(settings: LocalSettings) -> Result<Self, BackendError> {
        let run_as = RunAs::resolve(settings.user.as_deref())?;
        let work_root = settings
            .work_root
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let sandbox = match Sandbox::detect(settings.sandbox)? {
            Detected::Sandbox(sandbox) => {
                tracing::info!(
                    user = %run_as.name,
                    work_root = %work_root.display(),
                    "local backend: each job runs in a bubblewrap sandbox (own pid, mount, ipc, uts and network \
                     namespaces, private /tmp); it still shares this host's kernel"
                );
                Some(sandbox)
            }
            Detected::Unsandboxed(reason) => {
                tracing::warn!(
                    user = %run_as.name,
                    work_root = %work_root.display(),
                    %reason,
                    "SANDBOX_BACKEND=none: the local backend is NOT a sandbox; jobs share this host's files, \
                     network and kernel. Never let it run untrusted code in production; run the worker as root \
                     with bubblewrap installed, or use the docker or ssh backend"
                );
                None
            }
        };
        let cgroups = match &sandbox {
            Some(_) => Hierarchies::detect(),
            None => Hierarchies::NONE,
        };
        if sandbox.is_some() && cgroups.is_empty() {
            tracing::warn!(
                "local backend: no cgroup hierarchy this worker may use; memory, processes and cpu_time are \
                 per-process rlimits, and cpus cannot be enforced"
            );
        }
        let uids = match (settings.uids, &sandbox) {
            (None, _) => None,
            (Some(range), Some(_)) => Some(UidPool::new(range)?),
            (Some(_), None) => {
                return Err(BackendError::new(
                    ErrorKind::SandboxStartFailed,
                    KIND,
                    "uids",
                    "[pools.NAME.local] uids needs the bubblewrap sandbox (a root worker with bubblewrap \
                     installed): without it a job's surviving processes would keep its uid for the next job; \
                     remove `uids` or install bubblewrap"
                        .to_string(),
                ));
            }
        };
        let root = work_root.clone();
        std::thread::spawn(move || stale::sweep(&root));
        Ok(Self {
            settings,
            run_as,
            sandbox,
            cgroups,
            uids,
            work_root,
            removals: Arc::new(Semaphore::new(PENDING_REMOVALS)),
        })
    }

    fn error(&self, kind: ErrorKind, message: String) -> BackendError {
        BackendError::new(kind, KIND, self.work_root.display().to_string(), message)
    }

    /// Runs `job` in `workdir`, which the caller removes.
    async fn run(
        &self,
        job: &Job,
        control: &JobControl,
        workdir: &Workdir,
        run_as: &RunAs,
    ) -> Result<Execution, BackendError> {
        let env = workdir.env(&self.settings.path, &job.env);
        let cgroup = self.job_cgroup(job)?;
        let covered = |controller| cgroup.as_ref().is_some_and(|cgroup| cgroup.has(controller));
        let rlimits = rlimits::beside(&job.limits, cgroup.as_ref());
        let (spawned, status) = match &self.sandbox {
            // Admission sends no such job (no egress capability without bubblewrap): never run
            // it on the host's network.
            None if job.egress.is_some() => {
                return Err(self.error(
                    ErrorKind::LimitNotEnforceable,
                    "a job held to egress rules needs the bubblewrap sandbox; it was not run"
                        .into(),
                ));
            }
            None => {
                let setup = Setup {
                    switch_to: run_as.switch_to(),
                    rlimits,
                    cgroups: Vec::new(),
                };
                let spawned = child::spawn(&job.argv, &env, workdir.path(), &setup, Vec::new());
                (spawned, None)
            }
            Some(sandbox) => {
                let launch = sandbox
                    .launch(job, workdir.path(), run_as, &rlimits, &env)
                    .map_err(|failure| {
                        self.error(
                            ErrorKind::SandboxStartFailed,
                            format!("preparing the job's sandbox failed: {failure}"),
                        )
                    })?;
                let spawned = child::spawn(
                    &launch.argv,
                    &launch.env,
                    workdir.path(),
                    &Setup::sandbox(cgroup.as_ref()),
                    launch.passed,
                );
                (spawned, Some(launch.status))
            }
        };
        let spawned = match spawned {
            Ok(spawned) => spawned,
            Err(error) => return self.not_started(job, control, error),
        };
        let started = spawned.started;
        let timeout = job.limits.timeout.map(|timeout| timeout.as_duration());
        let cpu = cgroup
            .as_ref()
            .filter(|cgroup| cgroup.has(Controller::CpuAccounting))
            .zip(job.limits.cpu_time)
            .map(|(cgroup, limit)| CpuBudget {
                cgroup,
                limit: limit.as_duration(),
            });
        let Finished {
            ending,
            reaped,
            escaped,
            cpu_exhausted,
        } = supervise::supervise(
            spawned,
            job.stdin.as_bytes().to_vec(),
            timeout,
            cpu,
            control,
        )
        .await;
        if escaped {
            note_escape(job, control);
        }
        let reaped = reaped.map_err(|message| self.error(ErrorKind::Internal, message))?;
        let oom_killed = cgroup.as_ref().is_some_and(|cgroup| cgroup.oom_kills() > 0);
        let killed_for = if cpu_exhausted {
            Some(Signal::SIGXCPU)
        } else if oom_killed {
            Some(Signal::SIGKILL)
        } else {
            None
        };
        let (exit_code, signal) = self.exit_of(ending, &reaped, status, killed_for, control)?;
        let memory = Memory {
            cgroup: covered(Controller::Memory),
            oom_killed,
            peak_bytes: reaped.peak_memory_bytes,
        };
        let ending = refine(ending, job, control, (exit_code, signal), &memory);
        // Every process of the sandbox is dead by now: its cgroups go.
        if let Some(cgroup) = cgroup {
            cgroup.remove().await;
        }
        Ok(Execution {
            ending,
            exit_code,
            signal,
            wall_time: reaped.exited_at.saturating_duration_since(started),
            cpu_time: Some(reaped.cpu_time),
            peak_memory_bytes: Some(reaped.peak_memory_bytes),
            enforcement: self.report(&job.limits),
            files: None,
        })
    }

    /// Fresh cgroups for a sandboxed job, when the host has any.
    fn job_cgroup(&self, job: &Job) -> Result<Option<JobCgroup>, BackendError> {
        if self.sandbox.is_none() || self.cgroups.is_empty() {
            return Ok(None);
        }
        JobCgroup::create(&self.cgroups, &job.limits)
            .map(Some)
            .map_err(|failure| {
                self.error(
                    ErrorKind::SandboxStartFailed,
                    format!("creating the job's cgroups failed: {failure}"),
                )
            })
    }

    /// The exit code and signal of the job's own process: the reaped leader's, or in a sandbox
    /// what its pid 1 reported. When the sandbox was killed for a limit before pid 1 could
    /// report (`killed_for`: CPU time, or its cgroup ran out of memory), that signal. A
    /// sandbox that ended on its own without reporting failed.
    fn exit_of(
        &self,
        ending: Ending,
        reaped: &Reaped,
        status: Option<StatusPipe>,
        killed_for: Option<Signal>,
        control: &JobControl,
    ) -> Result<(Option<i32>, Option<i32>), BackendError> {
        let Some(status) = status else {
            return Ok(verdict::exit_of(reaped.status));
        };
        match (status.read(), ending) {
            (Some(raw), _) => {
                let status = WaitStatus::from_raw(Pid::from_raw(1), raw).map_err(|errno| {
                    self.error(
                        ErrorKind::Internal,
                        format!("the sandbox reported an unreadable wait status {raw}: {errno}"),
                    )
                })?;
                Ok(verdict::exit_of(status))
            }
            (None, _) if killed_for.is_some() => Ok((None, killed_for.map(|signal| signal as i32))),
            // Stopped by the worker before the job's process ended: bubblewrap's SIGKILL.
            (None, Ending::Timeout | Ending::Cancelled | Ending::OutputLimit) => {
                Ok(verdict::exit_of(reaped.status))
            }
            (None, _) => {
                let stderr = control.output.snapshot().stderr;
                let tail = &stderr[stderr.len().saturating_sub(SANDBOX_ERROR_BYTES)..];
                Err(self.error(
                    ErrorKind::SandboxStartFailed,
                    format!(
                        "the job's bubblewrap sandbox ended ({:?}) without the job's status: it failed to \
                         start or its pid 1 died; its stderr ends with: {}",
                        reaped.status,
                        String::from_utf8_lossy(tail).trim()
                    ),
                ))
            }
        }
    }

    /// The enforcement report for `limits`.
    fn report(&self, limits: &Limits) -> EnforcementReport {
        verdict::report(limits, &self.enforcer())
    }

    /// What enforces each limit of this backend's jobs.
    fn enforcer(&self) -> verdict::Enforcer<'_> {
        verdict::Enforcer {
            run_as: self.identity(),
            sandboxed: self.sandbox.is_some(),
            cgroups: &self.cgroups,
        }
    }

    /// Who jobs run as, for reports: the pool's user, or a uid of each job's own.
    fn identity(&self) -> RunAs {
        RunAs {
            per_job: self.uids.is_some(),
            ..self.run_as.clone()
        }
    }

    /// Creates the job's working directory: inline when the request's files are small.
    async fn prepare(&self, job: &Job, run_as: &RunAs) -> Result<Workdir, BackendError> {
        let owner = run_as.switch_to();
        if Workdir::is_small(&job.files) {
            return Workdir::create(&self.work_root, owner, &job.files);
        }
        let (root, files) = (self.work_root.clone(), job.files.clone());
        tokio::task::spawn_blocking(move || Workdir::create(&root, owner, &files))
            .await
            .map_err(|error| {
                self.error(
                    ErrorKind::Internal,
                    format!("preparing the working directory failed: {error}"),
                )
            })?
    }

    /// Removes `workdir` on a blocking thread, without waiting for it unless
    /// [`PENDING_REMOVALS`] are already waiting.
    async fn remove(&self, workdir: Workdir) {
        let Ok(permit) = Arc::clone(&self.removals).acquire_owned().await else {
            // The semaphore is never closed; remove here rather than not at all.
            workdir.remove();
            return;
        };
        // Detached: it runs even if this job's future is dropped, and at shutdown the runtime
        // either runs it or drops it, which removes the directory too.
        drop(tokio::task::spawn_blocking(move || {
            workdir.remove();
            drop(permit);
        }));
    }

    /// A job whose program could not start: 127 and 126 like a shell, else a backend error.
    fn not_started(
        &self,
        job: &Job,
        control: &JobControl,
        error: SpawnError,
    ) -> Result<Execution, BackendError> {
        let program = job.argv.first().map_or("", String::as_str);
        if self.sandbox.is_some() && !matches!(error, SpawnError::Invalid(_)) {
            // What did not start is bubblewrap (the job's program is exec'd inside).
            return Err(self.error(
                ErrorKind::SandboxStartFailed,
                format!(
                    "starting the job's sandbox ({}) failed: {error:?}",
                    sandbox::BWRAP
                ),
            ));
        }
        let (code, line) = match error {
            SpawnError::NotFound if program.contains('/') => {
                (127, format!("program `{program}` not found"))
            }
            SpawnError::NotFound => (127, format!("program `{program}` not found on PATH")),
            SpawnError::NotExecutable(error) => (
                126,
                format!("program `{program}` cannot be executed: {error}"),
            ),
            SpawnError::Invalid(error) => {
                return Err(self.error(
                    ErrorKind::InvalidRequest,
                    format!("the job's argv or env is unusable: {error}"),
                ));
            }
            SpawnError::Failed(error) => {
                return Err(self.error(
                    ErrorKind::SandboxStartFailed,
                    format!(
                        "starting `{program}` as user `{}` failed: {error}; check that the worker may switch to \
                         that user and set the job's rlimits",
                        self.run_as.name
                    ),
                ));
            }
        };
        control
            .output
            .write(Stream::Stderr, format!("openshell: {line}\n").as_bytes());
        Ok(Execution {
            enforcement: self.report(&job.limits),
            ..Execution::exited(code)
        })
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        verdict::capabilities(&self.enforcer())
    }

    async fn health(&self) -> Result<(), BackendError> {
        let root = self.work_root.clone();
        let probe = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new()
                .prefix(".openshell-health-")
                .tempfile_in(&root)
                .map(drop)
        });
        match probe.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(self.error(
                ErrorKind::SandboxStartFailed,
                format!("the work root is not writable: {error}; create it or set [pools.NAME.local] work_root"),
            )),
            Err(error) => Err(self.error(ErrorKind::Internal, format!("the health probe failed: {error}"))),
        }
    }

    async fn execute(&self, job: Job, control: JobControl) -> Result<Execution, BackendError> {
        log_job(&job, &self.run_as);
        if control.cancel.is_cancelled() {
            return Ok(Execution {
                ending: Ending::Cancelled,
                exit_code: None,
                enforcement: self.report(&job.limits),
                ..Execution::exited(0)
            });
        }
        // Held until the job's sandbox, hence every process of the job, is gone.
        let lease = self.uids.as_ref().map(UidPool::lease).transpose()?;
        let run_as = lease
            .as_ref()
            .map_or_else(|| self.run_as.clone(), uids::Lease::run_as);
        let workdir = self.prepare(&job, &run_as).await?;
        let mut outcome = self.run(&job, &control, &workdir, &run_as).await;
        drop(lease);
        if let (Ok(execution), Some(request)) = (&mut outcome, &job.outputs)
            && matches!(execution.ending, Ending::Exited | Ending::OutOfMemory)
        {
            execution.files = collect_files(workdir.path(), request).await;
        }
        // Every process of the job is dead by now, except one that escaped the group.
        self.remove(workdir).await;
        if let Ok(execution) = &outcome {
            log_ending(&job, execution, &control);
        }
        outcome
    }

    /// Sessions hold a bubblewrap sandbox (see the `session` module): none without one.
    fn sessions(&self) -> Option<&dyn openshell_backend::SessionBackend> {
        self.sandbox
            .as_ref()
            .map(|_| self as &dyn openshell_backend::SessionBackend)
    }
}

/// The files `request` asks for from the finished job's working directory; `None` (logged)
/// when it could not be read.
async fn collect_files(workdir: &Path, request: &FilesRequest) -> Option<CollectedFiles> {
    let (workdir, request) = (workdir.to_path_buf(), request.clone());
    match tokio::task::spawn_blocking(move || files::collect_dir(&workdir, &request)).await {
        Ok(Ok(files)) => Some(files),
        Ok(Err(error)) => {
            tracing::warn!(%error, "the job's files could not be read");
            None
        }
        Err(error) => {
            tracing::warn!(%error, "reading the job's files failed");
            None
        }
    }
}

/// Tells the log and the job's stderr that a process escaped the group with the pipes open.
fn note_escape(job: &Job, control: &JobControl) {
    tracing::warn!(job = %job.id, "a process of the job left its process group and kept its output open");
    control.output.write(
        Stream::Stderr,
        b"openshell: output was still open 1s after the job ended (a process escaped with setsid?); \
          output may be incomplete\n",
    );
}

/// What a job's memory limit did.
#[derive(Debug)]
struct Memory {
    /// The limit is the job's memory cgroup (else RLIMIT_DATA).
    cgroup: bool,
    /// The kernel's OOM killer killed a process of the job's cgroup.
    oom_killed: bool,
    /// Peak resident memory of the job's process.
    peak_bytes: u64,
}

/// A job that ended on its own may still have hit the output limit on its way out, or have
/// run out of memory: its cgroup's OOM killer says so, while RLIMIT_DATA reports a failed
/// allocation, not a kill (a heuristic then).
fn refine(
    ending: Ending,
    job: &Job,
    control: &JobControl,
    exit: (Option<i32>, Option<i32>),
    memory: &Memory,
) -> Ending {
    if ending != Ending::Exited {
        return ending;
    }
    if control.output.is_limit_reached() {
        return Ending::OutputLimit;
    }
    if memory.cgroup {
        if memory.oom_killed && openshell_backend::oom::failed(exit) {
            return Ending::OutOfMemory;
        }
        return Ending::Exited;
    }
    let memory_limit = job.limits.memory.map(|memory| memory.bytes());
    if verdict::looks_out_of_memory(memory_limit, exit, memory.peak_bytes, || {
        control.output.snapshot().stderr
    }) {
        return Ending::OutOfMemory;
    }
    Ending::Exited
}

fn log_job(job: &Job, run_as: &RunAs) {
    tracing::debug!(
        job = %job.id,
        tenant = %job.tenant,
        user = %run_as.name,
        argv = ?job.argv,
        env_keys = ?job.env.keys().collect::<Vec<_>>(),
        files = ?job.files.iter().map(|file| (&file.path, file.content.len())).collect::<Vec<_>>(),
        stdin_bytes = job.stdin.len(),
        limits = ?job.limits,
        "local backend: running job"
    );
}

fn log_ending(job: &Job, execution: &Execution, control: &JobControl) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        // The snapshot below copies the whole captured output: only pay for it when logged.
        return;
    }
    let output = control.output.snapshot();
    tracing::debug!(
        job = %job.id,
        ending = ?execution.ending,
        exit_code = ?execution.exit_code,
        signal = ?execution.signal,
        stdout_bytes = output.stdout.len(),
        stderr_bytes = output.stderr.len(),
        wall_ms = execution.wall_time.as_millis(),
        cpu_ms = execution.cpu_time.map(|cpu| cpu.as_millis()),
        peak_memory_bytes = execution.peak_memory_bytes,
        "local backend: job ended"
    );
}
