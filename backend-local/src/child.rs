//! Starting a job's process in its own session under its rlimits, killing its process group,
//! and reaping it with its resource usage.
//!
//! Everything happens on the calling task: [`launch`](super::launch) starts the process
//! without forking the worker, and the leader's exit is awaited on its pidfd, so a job costs
//! no thread hand-off.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::{Gid, Pid, Uid, pipe2};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use super::cgroup::JobCgroup;
use super::launch::{self, LaunchError, Plan, Stage};
use super::rlimits::{self, Rlimit};
use openshell_protocol::Limits;

/// PATH searched when the job's environment has none, as glibc's `execvp` does.
const DEFAULT_PATH: &[u8] = b"/bin:/usr/bin";

/// The shell that runs a file without a `#!` line or ELF header, as `execvp` does.
const SHELL: &std::ffi::CStr = c"/bin/sh";

/// What the child does between clone and exec, besides its stdio and directory.
#[derive(Debug, Clone)]
pub(super) struct Setup {
    /// Switch to this user and group (the worker is root).
    pub switch_to: Option<(Uid, Gid)>,
    /// Limits to set, already clamped to what the child may set.
    pub rlimits: Vec<Rlimit>,
    /// `cgroup.procs` files of the job's cgroups, joined first.
    pub cgroups: Vec<RawFd>,
}

impl Setup {
    /// For bubblewrap or nsenter: started as root with only RLIMIT_CORE, in the job's
    /// `cgroup`; the sandbox's pid 1 sets the job's own limits after dropping to its user.
    pub(super) fn sandbox(cgroup: Option<&JobCgroup>) -> Self {
        Self {
            switch_to: None,
            rlimits: rlimits::plan(&Limits::default()),
            cgroups: cgroup.map(JobCgroup::procs_fds).unwrap_or_default(),
        }
    }
}

/// Why a job's process did not start.
#[derive(Debug)]
pub(super) enum SpawnError {
    /// `argv[0]` does not exist (exit 127, as shells do).
    NotFound,
    /// `argv[0]` exists but cannot be executed (exit 126, as shells do).
    NotExecutable(io::Error),
    /// The request itself is unusable (a NUL byte in an argument or variable, argv too long).
    Invalid(io::Error),
    /// Anything else: pipes, clone, setsid, setuid or setrlimit failed.
    Failed(io::Error),
}

impl SpawnError {
    fn from_launch(error: LaunchError, setup: &Setup) -> Self {
        let os_error = io::Error::from(error.errno);
        match (error.stage, error.errno) {
            (Stage::Exec, Errno::ENOENT) => Self::NotFound,
            (Stage::Exec, Errno::EACCES | Errno::ENOEXEC | Errno::ENOTDIR | Errno::EISDIR) => {
                Self::NotExecutable(os_error)
            }
            (Stage::Exec, Errno::E2BIG) => Self::Invalid(os_error),
            (Stage::Rlimit, errno) => {
                let resource = setup.rlimits.get(error.index).map(|limit| limit.resource);
                Self::Failed(io::Error::new(
                    os_error.kind(),
                    format!("setrlimit({resource:?}) failed: {}", errno.desc()),
                ))
            }
            _ => Self::Failed(io::Error::new(os_error.kind(), error.to_string())),
        }
    }
}

fn invalid(what: &str) -> SpawnError {
    SpawnError::Invalid(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} contains a NUL byte"),
    ))
}

/// A started job: its leader, its pipes, and when it started.
#[derive(Debug)]
pub(super) struct Spawned {
    /// The job's leader and process group.
    pub process: Process,
    /// The child's standard input.
    pub stdin: ChildStdin,
    /// The child's standard output.
    pub stdout: ChildStdout,
    /// The child's standard error.
    pub stderr: ChildStderr,
    /// When the process started.
    pub started: Instant,
}

/// Starts `argv` in `dir` with exactly `env`, under `setup`, giving it `passed` as its fds
/// 3, 4, ... (closed here once it has them).
pub(super) fn spawn(
    argv: &[String],
    env: &BTreeMap<String, OsString>,
    dir: &Path,
    setup: &Setup,
    passed: Vec<OwnedFd>,
) -> Result<Spawned, SpawnError> {
    let program = argv.first().ok_or_else(|| {
        SpawnError::Invalid(io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))
    })?;
    let (stdin_read, stdin_write) = pipe().map_err(SpawnError::Failed)?;
    let (stdout_read, stdout_write) = pipe().map_err(SpawnError::Failed)?;
    let (stderr_read, stderr_write) = pipe().map_err(SpawnError::Failed)?;
    let plan = Plan::new(
        candidates(program, env)?,
        c_strings(argv)?,
        environment(env)?,
        CString::new(dir.as_os_str().as_bytes()).map_err(|_| invalid("the working directory"))?,
        [
            stdin_read.as_raw_fd(),
            stdout_write.as_raw_fd(),
            stderr_write.as_raw_fd(),
        ],
        setup
            .switch_to
            .map(|(uid, gid)| (uid.as_raw(), gid.as_raw())),
        setup.rlimits.iter().map(Rlimit::raw).collect(),
    );
    let lowest = launch::PASSED_BASE + passed.len() as RawFd;
    let passed = passed
        .into_iter()
        .map(|fd| at_or_above(fd, lowest))
        .collect::<io::Result<Vec<_>>>()
        .map_err(SpawnError::Failed)?;
    let plan = plan
        .with_passed(passed.iter().map(AsRawFd::as_raw_fd).collect())
        .with_cgroups(setup.cgroups.clone());
    let started = Instant::now();
    let (pid, pidfd) =
        launch_or_shell(&plan).map_err(|error| SpawnError::from_launch(error, setup))?;
    // The child has its copies; ours must go so the job sees end of file and broken pipes.
    drop((stdin_read, stdout_write, stderr_write, passed));
    let process = Process::new(pid, pidfd).map_err(SpawnError::Failed)?;
    // On error `process` drops here, which kills the group and reaps the leader.
    let stdin = ChildStdin::from_std(stdin_write.into()).map_err(SpawnError::Failed)?;
    let stdout = ChildStdout::from_std(stdout_read.into()).map_err(SpawnError::Failed)?;
    let stderr = ChildStderr::from_std(stderr_read.into()).map_err(SpawnError::Failed)?;
    Ok(Spawned {
        process,
        stdin,
        stdout,
        stderr,
        started,
    })
}

/// Launches `plan`; a file that is neither ELF nor `#!` runs under `/bin/sh`, as `execvp` does.
fn launch_or_shell(plan: &Plan) -> Result<(Pid, OwnedFd), LaunchError> {
    match launch::launch(plan) {
        Err(error) if error.stage == Stage::Exec && error.errno == Errno::ENOEXEC => {
            let Some(script) = plan.candidate(error.index) else {
                return Err(error);
            };
            let mut argv = vec![SHELL.to_owned(), script.clone()];
            argv.extend(plan.argv().iter().skip(1).cloned());
            launch::launch(&plan.with_program(vec![SHELL.to_owned()], argv))
        }
        outcome => outcome,
    }
}

/// The paths `execvp` would try for `program` with the job's PATH.
fn candidates(program: &str, env: &BTreeMap<String, OsString>) -> Result<Vec<CString>, SpawnError> {
    if program.is_empty() {
        return Ok(Vec::new());
    }
    if program.contains('/') {
        return Ok(vec![
            CString::new(program).map_err(|_| invalid("the program name"))?,
        ]);
    }
    let path = env.get("PATH").map_or(DEFAULT_PATH, |path| path.as_bytes());
    path.split(|byte| *byte == b':')
        .map(|dir| {
            // An empty PATH entry is the current directory.
            let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
            let mut full = Vec::with_capacity(dir.len() + 1 + program.len());
            full.extend_from_slice(dir);
            full.push(b'/');
            full.extend_from_slice(program.as_bytes());
            CString::new(full).map_err(|_| invalid("PATH"))
        })
        .collect()
}

fn c_strings(argv: &[String]) -> Result<Vec<CString>, SpawnError> {
    argv.iter()
        .map(|arg| CString::new(arg.as_bytes()).map_err(|_| invalid("an argument")))
        .collect()
}

/// `KEY=VALUE` strings for execve.
fn environment(env: &BTreeMap<String, OsString>) -> Result<Vec<CString>, SpawnError> {
    env.iter()
        .map(|(key, value)| {
            let mut pair = Vec::with_capacity(key.len() + 1 + value.len());
            pair.extend_from_slice(key.as_bytes());
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            CString::new(pair).map_err(|_| invalid(&format!("environment variable `{key}`")))
        })
        .collect()
}

/// A close-on-exec pipe whose ends are both 3 or above, so that putting them on the child's
/// fds 0, 1 and 2 never overwrites another of them.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
    Ok((above_stdio(read)?, above_stdio(write)?))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    at_or_above(fd, 3)
}

/// `fd`, or a close-on-exec copy of it numbered `lowest` or above: copies (F_DUPFD_CLOEXEC
/// takes the lowest free number from 3) are held until one lands high enough.
fn at_or_above(fd: OwnedFd, lowest: RawFd) -> io::Result<OwnedFd> {
    let mut held = Vec::new();
    let mut fd = fd;
    while fd.as_raw_fd() < lowest {
        let copy = fd.try_clone()?;
        held.push(fd);
        fd = copy;
    }
    Ok(fd)
}

/// A job's leader: awaited on its pidfd, and the id of the job's process group.
#[derive(Debug)]
pub(super) struct Process {
    leader: Pid,
    pidfd: AsyncFd<OwnedFd>,
    /// True once the leader is reaped: its pid, hence the group id, may then be reused by a
    /// stranger, so the group must not be signalled any more.
    reaped: Mutex<bool>,
}

impl Process {
    #[allow(unsafe_code)]
    fn new(leader: Pid, pidfd: OwnedFd) -> io::Result<Self> {
        // SAFETY: an OwnedFd stays open, and is the same fd, for as long as it is owned, and
        // the AsyncFd owns it until dropped.
        let registered = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) };
        match registered {
            Ok(pidfd) => Ok(Self {
                leader,
                pidfd,
                reaped: Mutex::new(false),
            }),
            Err(error) => {
                signal_group(leader);
                reap_in_background(leader);
                Err(error.into())
            }
        }
    }

    /// Waits until the leader exits, kills what is left of its group, then reaps the leader.
    /// Cancel-safe: dropped before completion, it has changed nothing.
    pub async fn wait(&self) -> Result<Reaped, Errno> {
        loop {
            let mut ready = self
                .pidfd
                .readable()
                .await
                .map_err(|error| Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO)))?;
            // WNOWAIT leaves the leader a zombie, which keeps its pid, and so the group id,
            // reserved while the rest of the group is killed.
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
            match waitid(Id::PIDFd(self.pidfd.get_ref().as_fd()), flags) {
                Ok(WaitStatus::StillAlive) => ready.clear_ready(),
                Ok(_) => return self.reap_exited(),
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(errno),
            }
        }
    }

    /// The leader's pid (also the group's id).
    pub fn pid(&self) -> Pid {
        self.leader
    }

    /// SIGKILLs every process in the group, unless its leader is already reaped.
    pub fn kill(&self) {
        let reaped = self.reaped.lock().unwrap_or_else(PoisonError::into_inner);
        if !*reaped {
            signal_group(self.leader);
        }
    }

    /// The leader has exited: background children must not outlive the job.
    fn reap_exited(&self) -> Result<Reaped, Errno> {
        let exited_at = Instant::now();
        let mut reaped = self.reaped.lock().unwrap_or_else(PoisonError::into_inner);
        signal_group(self.leader);
        let (status, usage) = wait4(self.leader)?;
        *reaped = true;
        Ok(Reaped {
            status: WaitStatus::from_raw(self.leader, status)?,
            exited_at,
            cpu_time: duration(usage.ru_utime) + duration(usage.ru_stime),
            // ru_maxrss is in KiB on Linux.
            peak_memory_bytes: u64::try_from(usage.ru_maxrss)
                .unwrap_or(0)
                .saturating_mul(1024),
        })
    }
}

impl Drop for Process {
    /// Supervision ended before the leader was reaped (the job's future was dropped, or
    /// waiting failed): kill the group, and reap the leader off the async threads.
    fn drop(&mut self) {
        let reaped = *self
            .reaped
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if !reaped {
            signal_group(self.leader);
            reap_in_background(self.leader);
        }
    }
}

/// Reaps `leader`, already killed, on a thread of its own.
fn reap_in_background(leader: Pid) {
    let spawned = std::thread::Builder::new()
        .name("openshell-reap".to_string())
        .spawn(move || while let Err(Errno::EINTR) = wait4(leader) {});
    if let Err(error) = spawned {
        tracing::warn!(
            pid = leader.as_raw(),
            "could not start a thread to reap a killed job process, which stays a zombie: {error}"
        );
    }
}

fn signal_group(leader: Pid) {
    match killpg(leader, Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(errno) => tracing::warn!(
            pgid = leader.as_raw(),
            "killing a job's process group failed: {errno}"
        ),
    }
}

/// How the leader ended, and what the job used.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reaped {
    /// Exit code or signal.
    pub status: WaitStatus,
    /// When the leader was seen to exit.
    pub exited_at: Instant,
    /// User plus system CPU time of the leader and the descendants it reaped.
    pub cpu_time: Duration,
    /// Peak resident memory of the largest of those processes, in bytes.
    pub peak_memory_bytes: u64,
}

/// Reaps `pid` with its own resource usage; getrusage(RUSAGE_CHILDREN) would mix in every
/// other job this worker ran.
#[allow(unsafe_code)]
fn wait4(pid: Pid) -> Result<(i32, libc::rusage), Errno> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is a struct of integers, for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live, writable locals of the types wait4 expects.
        let rc = unsafe { libc::wait4(pid.as_raw(), &mut status, 0, &mut usage) };
        match Errno::result(rc) {
            Ok(_) => return Ok((status, usage)),
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno),
        }
    }
}

fn duration(time: libc::timeval) -> Duration {
    let seconds = u64::try_from(time.tv_sec).unwrap_or(0);
    let micros = u64::try_from(time.tv_usec).unwrap_or(0);
    Duration::from_secs(seconds) + Duration::from_micros(micros)
}
