//! Starting a job's process in its own session under its rlimits, killing its process group,
//! and reaping it with its resource usage.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::sys::prctl::set_no_new_privs;
use nix::sys::resource::setrlimit;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::{Gid, Pid, Uid, setgid, setgroups, setsid, setuid};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;

use super::rlimits::Rlimit;

/// What the child does between fork and exec.
#[derive(Debug, Clone)]
pub(super) struct Setup {
    /// Switch to this user and group (the worker is root).
    pub switch_to: Option<(Uid, Gid)>,
    /// Limits to set, already clamped to what the child may set.
    pub rlimits: Vec<Rlimit>,
}

impl Setup {
    /// Runs in the forked child, so only async-signal-safe syscalls and no allocation.
    fn apply(&self) -> io::Result<()> {
        // A new session and process group: killpg then reaches every descendant that does not
        // call setsid itself, and the job has no controlling terminal.
        setsid()?;
        // setuid binaries (su, sudo) cannot give the job more privileges than it starts with.
        set_no_new_privs()?;
        if let Some((uid, gid)) = self.switch_to {
            setgroups(&[])?;
            setgid(gid)?;
            setuid(uid)?;
        }
        // After setuid: setuid marks the process PF_NPROC_EXCEEDED when the new user already has
        // RLIMIT_NPROC processes, and execve then fails with EAGAIN. The limit in force at setuid
        // time is the worker's, so the job's own limit must come after.
        for limit in &self.rlimits {
            setrlimit(limit.resource, limit.soft, limit.hard)?;
        }
        Ok(())
    }
}

/// Installs `setup` as the child's pre-exec hook.
#[allow(unsafe_code)]
fn install(command: &mut Command, setup: Setup) {
    // SAFETY: `Setup::apply` only reads memory captured before fork and makes async-signal-safe
    // syscalls (setsid, prctl, setgroups, setgid, setuid, setrlimit); it neither allocates nor
    // takes locks, so it is sound between fork and exec in a multi-threaded process.
    unsafe {
        command.pre_exec(move || setup.apply());
    }
}

/// Why a job's process did not start.
#[derive(Debug)]
pub(super) enum SpawnError {
    /// `argv[0]` does not exist (exit 127, as shells do).
    NotFound,
    /// `argv[0]` exists but cannot be executed (exit 126, as shells do).
    NotExecutable(io::Error),
    /// The request itself is unusable (a NUL byte in an argument or variable).
    Invalid(io::Error),
    /// Anything else: pipes, fork, setsid, setuid or setrlimit failed.
    Failed(io::Error),
}

impl SpawnError {
    fn from_io(error: io::Error) -> Self {
        match error.raw_os_error() {
            Some(libc::ENOENT) => Self::NotFound,
            Some(libc::EACCES | libc::ENOEXEC) => Self::NotExecutable(error),
            _ if error.kind() == io::ErrorKind::InvalidInput => Self::Invalid(error),
            _ => Self::Failed(error),
        }
    }
}

/// A started job: its process group, its pipes, and the task that reaps its leader.
#[derive(Debug)]
pub(super) struct Spawned {
    /// The job's process group.
    pub group: Group,
    /// Resolves once the leader has exited and been reaped.
    pub reaper: JoinHandle<Result<Reaped, Errno>>,
    /// The child's standard input.
    pub stdin: ChildStdin,
    /// The child's standard output.
    pub stdout: ChildStdout,
    /// The child's standard error.
    pub stderr: ChildStderr,
    /// When the process started.
    pub started: Instant,
}

/// Starts `argv` in `dir` with exactly `env`, under `setup`.
pub(super) fn spawn(
    argv: &[String],
    env: &BTreeMap<String, OsString>,
    dir: &Path,
    setup: Setup,
) -> Result<Spawned, SpawnError> {
    let (program, args) = argv.split_first().ok_or_else(|| {
        SpawnError::Invalid(io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))
    })?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(env)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    install(&mut command, setup);
    let started = Instant::now();
    let mut child = command.spawn().map_err(SpawnError::from_io)?;
    let leader = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let group = Group::new(leader);
    let reaper = tokio::task::spawn_blocking({
        let group = group.clone();
        move || reap(&group)
    });
    let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
        group.kill();
        return Err(SpawnError::Failed(io::Error::other("child pipes missing")));
    };
    let converted = (|| {
        Ok::<_, io::Error>((
            ChildStdin::from_std(stdin)?,
            ChildStdout::from_std(stdout)?,
            ChildStderr::from_std(stderr)?,
        ))
    })();
    match converted {
        Ok((stdin, stdout, stderr)) => Ok(Spawned {
            group,
            reaper,
            stdin,
            stdout,
            stderr,
            started,
        }),
        Err(error) => {
            // The reaper still collects the killed leader.
            group.kill();
            Err(SpawnError::Failed(error))
        }
    }
}

/// A job's process group, identified by its leader's pid.
#[derive(Debug, Clone)]
pub(super) struct Group {
    leader: Pid,
    /// True once the leader is reaped: its pid, hence the group id, may then be reused by a
    /// stranger, so the group must not be signalled any more.
    reaped: Arc<Mutex<bool>>,
}

impl Group {
    fn new(leader: Pid) -> Self {
        Self {
            leader,
            reaped: Arc::new(Mutex::new(false)),
        }
    }

    /// SIGKILLs every process in the group, unless its leader is already reaped.
    pub fn kill(&self) {
        let reaped = self.reaped.lock().unwrap_or_else(PoisonError::into_inner);
        if !*reaped {
            signal_group(self.leader);
        }
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
    /// When the leader exited.
    pub exited_at: Instant,
    /// User plus system CPU time of the leader and the descendants it reaped.
    pub cpu_time: Duration,
    /// Peak resident memory of the largest of those processes, in bytes.
    pub peak_memory_bytes: u64,
}

/// Blocks until the leader exits, kills what is left of its group, then reaps it.
fn reap(group: &Group) -> Result<Reaped, Errno> {
    // WNOWAIT leaves the leader a zombie, which keeps its pid, and so the group id, reserved
    // while the rest of the group is killed.
    loop {
        match waitid(
            Id::Pid(group.leader),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno),
        }
    }
    let exited_at = Instant::now();
    let mut reaped = group.reaped.lock().unwrap_or_else(PoisonError::into_inner);
    // Background children must not outlive the job.
    signal_group(group.leader);
    let (status, usage) = wait4(group.leader)?;
    *reaped = true;
    Ok(Reaped {
        status: WaitStatus::from_raw(group.leader, status)?,
        exited_at,
        cpu_time: duration(usage.ru_utime) + duration(usage.ru_stime),
        // ru_maxrss is in KiB on Linux.
        peak_memory_bytes: u64::try_from(usage.ru_maxrss)
            .unwrap_or(0)
            .saturating_mul(1024),
    })
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
