//! Starting a job's process the way `posix_spawn` does: `clone(CLONE_VM | CLONE_VFORK)`.
//!
//! `fork` copies the worker's page tables and write-protects its memory, which costs the
//! worker copy-on-write faults on every thread after each job starts (about a millisecond per
//! job, and contention under load); `posix_spawn` cannot drop privileges or set rlimits. So
//! the child borrows the worker's memory, runs on a stack of its own, and the calling thread
//! waits (CLONE_VFORK) until the child has called `execve` or exited.
//!
//! Sharing memory with a multi-threaded parent puts hard rules on the child, kept by
//! [`child_main`] and everything it calls:
//! - it reads only the [`Plan`], built before `clone` and untouched by the parent until
//!   `clone` returns, and writes only its own stack and the plan's atomic failure slot;
//! - it never allocates, locks, unwinds or calls libc wrappers with process-wide state: the
//!   credential calls are raw syscalls, because glibc's `setuid` family would signal the
//!   worker's threads to change their credentials too;
//! - every signal is blocked from before `clone` until just before `execve`, and every handler
//!   is reset to its default first, so no worker signal handler ever runs in the child.
//!
//! The kernel hands back a pidfd with the pid (CLONE_PIDFD, Linux 5.2; waiting on it needs
//! 5.4), so the job can be waited for without a thread, and its pid never refers to anyone
//! else while we hold it.

use std::cell::Cell;
use std::ffi::{CString, c_char, c_int, c_long, c_void};
use std::fmt;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use nix::errno::Errno;
use nix::libc;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

/// The child's stack, without its guard page. The child only makes syscalls: a few KiB suffice.
const STACK_SIZE: usize = 64 * 1024;

/// The first fd number a plan's passed fds get in the program (after stdin, stdout, stderr).
pub(super) const PASSED_BASE: RawFd = 3;

/// The highest signal number on Linux (`_NSIG - 1`).
const LAST_SIGNAL: c_int = 64;

/// Bytes in the kernel's signal set (`_NSIG / 8`), which raw `rt_sig*` syscalls must be given.
const KERNEL_SIGSET_BYTES: usize = 8;

/// The step of the child's setup that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Mapping the child's stack.
    Stack,
    /// The `clone` call itself.
    Clone,
    /// Joining the job's cgroup at `index` in the plan.
    Cgroup,
    /// Putting the pipes on fds 0, 1 and 2.
    Stdio,
    /// Entering the working directory.
    Chdir,
    /// Starting a new session.
    Setsid,
    /// Setting no_new_privs.
    NoNewPrivs,
    /// Dropping supplementary groups.
    Setgroups,
    /// Switching group.
    Setgid,
    /// Switching user.
    Setuid,
    /// Setting the rlimit at `index` in the plan.
    Rlimit,
    /// Executing the program (the candidate at `index`).
    Exec,
}

impl Stage {
    const ALL: [Self; 12] = [
        Self::Stack,
        Self::Clone,
        Self::Cgroup,
        Self::Stdio,
        Self::Chdir,
        Self::Setsid,
        Self::NoNewPrivs,
        Self::Setgroups,
        Self::Setgid,
        Self::Setuid,
        Self::Rlimit,
        Self::Exec,
    ];

    fn code(self) -> i32 {
        self as i32 + 1
    }

    fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|stage| stage.code() == code)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stack => "mapping the child's stack",
            Self::Clone => "clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)",
            Self::Cgroup => "joining the job's cgroup",
            Self::Stdio => "attaching the pipes to stdin/stdout/stderr",
            Self::Chdir => "entering the working directory",
            Self::Setsid => "setsid",
            Self::NoNewPrivs => "prctl(PR_SET_NO_NEW_PRIVS)",
            Self::Setgroups => "setgroups",
            Self::Setgid => "setresgid",
            Self::Setuid => "setresuid",
            Self::Rlimit => "setrlimit",
            Self::Exec => "execve",
        })
    }
}

/// Why a launch failed: the step, the errno, and which rlimit or PATH candidate it concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LaunchError {
    /// The step that failed.
    pub stage: Stage,
    /// Its errno.
    pub errno: Errno,
    /// For [`Stage::Rlimit`] and [`Stage::Exec`], the index in the plan's list.
    pub index: usize,
}

impl LaunchError {
    fn new(stage: Stage, errno: Errno) -> Self {
        Self {
            stage,
            errno,
            index: 0,
        }
    }
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.stage, self.errno.desc())?;
        if self.stage == Stage::Clone && self.errno == Errno::EINVAL {
            f.write_str(" (the local backend needs Linux 5.4 or later, for pidfds)")?;
        }
        Ok(())
    }
}

/// One rlimit to set: a `RLIMIT_*` number and its soft and hard values.
#[derive(Debug, Clone, Copy)]
pub(super) struct RawRlimit {
    /// The resource (`RLIMIT_*`).
    pub resource: c_int,
    /// Soft and hard limit.
    pub limit: libc::rlimit64,
}

/// Everything the child needs, as C data built before `clone`.
pub(super) struct Plan {
    /// Paths to `execve` in turn, as `execvp` would try them.
    candidates: Vec<CString>,
    /// Keeps the strings `argv_ptrs` points into alive.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    /// Keeps the strings `envp_ptrs` points into alive.
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const c_char>,
    dir: CString,
    /// The fds that become the child's 0, 1 and 2; each is 3 or above.
    stdio: [RawFd; 3],
    /// Fds the program gets as 3, 4, ... (open across exec); each is at or above
    /// [`PASSED_BASE`] + their number, so that no dup clobbers another.
    passed: Vec<RawFd>,
    /// `cgroup.procs` files the child writes `0` to before anything else: it joins them.
    cgroups: Vec<RawFd>,
    switch_to: Option<(libc::uid_t, libc::gid_t)>,
    rlimits: Vec<RawRlimit>,
    /// Written by the child when it fails: the stage code (0 while none), errno and index.
    failed_stage: AtomicI32,
    failed_errno: AtomicI32,
    failed_index: AtomicUsize,
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("candidates", &self.candidates)
            .field("argv", &self._argv)
            .field("dir", &self.dir)
            .field("stdio", &self.stdio)
            .field("switch_to", &self.switch_to)
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// A plan to exec the first usable of `candidates` with `argv` and exactly `envp`
    /// (`KEY=VALUE` strings) in `dir`, on `stdio`, as `switch_to`, under `rlimits`.
    pub fn new(
        candidates: Vec<CString>,
        argv: Vec<CString>,
        envp: Vec<CString>,
        dir: CString,
        stdio: [RawFd; 3],
        switch_to: Option<(libc::uid_t, libc::gid_t)>,
        rlimits: Vec<RawRlimit>,
    ) -> Self {
        let argv_ptrs = null_terminated(&argv);
        let envp_ptrs = null_terminated(&envp);
        Self {
            candidates,
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            dir,
            stdio,
            passed: Vec::new(),
            cgroups: Vec::new(),
            switch_to,
            rlimits,
            failed_stage: AtomicI32::new(0),
            failed_errno: AtomicI32::new(0),
            failed_index: AtomicUsize::new(0),
        }
    }

    /// The same plan, with `fds` given to the program as fds 3, 4, ... Each must be at or
    /// above `PASSED_BASE + fds.len()`.
    pub fn with_passed(mut self, fds: Vec<RawFd>) -> Self {
        debug_assert!(fds.iter().all(|&fd| fd >= PASSED_BASE + fds.len() as RawFd));
        self.passed = fds;
        self
    }

    /// The same plan, with the child joining the cgroups whose `cgroup.procs` are `fds`.
    pub fn with_cgroups(mut self, fds: Vec<RawFd>) -> Self {
        self.cgroups = fds;
        self
    }

    /// The arguments, for a relaunch through `/bin/sh`.
    pub fn argv(&self) -> &[CString] {
        &self._argv
    }

    /// The PATH candidate at `index`.
    pub fn candidate(&self, index: usize) -> Option<&CString> {
        self.candidates.get(index)
    }

    /// A copy for another program, with the same directory, stdio, user and limits.
    pub fn with_program(&self, candidates: Vec<CString>, argv: Vec<CString>) -> Self {
        Self::new(
            candidates,
            argv,
            self._envp.clone(),
            self.dir.clone(),
            self.stdio,
            self.switch_to,
            self.rlimits.clone(),
        )
        .with_passed(self.passed.clone())
        .with_cgroups(self.cgroups.clone())
    }

    /// Records a failure from the child. Atomics only: no allocation, no locks.
    fn record(&self, (stage, errno, index): (Stage, i32, usize)) {
        self.failed_errno.store(errno, Ordering::SeqCst);
        self.failed_index.store(index, Ordering::SeqCst);
        self.failed_stage.store(stage.code(), Ordering::SeqCst);
    }

    /// The failure the child recorded, if any.
    fn failure(&self) -> Option<LaunchError> {
        let stage = Stage::from_code(self.failed_stage.load(Ordering::SeqCst))?;
        Some(LaunchError {
            stage,
            errno: Errno::from_raw(self.failed_errno.load(Ordering::SeqCst)),
            index: self.failed_index.load(Ordering::SeqCst),
        })
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|string| string.as_ptr())
        .chain([ptr::null()])
        .collect()
}

/// Starts the process `plan` describes. On success the child has already called `execve`:
/// returns its pid and a pidfd for it. On failure the child is reaped before returning.
pub(super) fn launch(plan: &Plan) -> Result<(Pid, OwnedFd), LaunchError> {
    plan.failed_stage.store(0, Ordering::SeqCst);
    let (pid, pidfd) = with_stack(|stack| {
        let _blocked = SignalsBlocked::all();
        clone_vfork(plan, stack)
    })
    .map_err(|error| LaunchError::new(Stage::Stack, errno_of(&error)))?
    .map_err(|errno| LaunchError::new(Stage::Clone, errno))?;
    if let Some(failure) = plan.failure() {
        drop(pidfd);
        // The child is exiting (CLONE_VFORK let us go at its exit): collect it.
        while let Err(Errno::EINTR) = waitpid(pid, None) {}
        return Err(failure);
    }
    Ok((pid, pidfd))
}

fn errno_of(error: &io::Error) -> Errno {
    Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO))
}

/// Clones the calling process into a child that runs [`child_main`] on `stack`, and returns
/// once the child has exec'd or exited.
#[allow(unsafe_code)]
fn clone_vfork(plan: &Plan, stack: &ChildStack) -> Result<(Pid, OwnedFd), Errno> {
    let mut pidfd: c_int = -1;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    let arg = ptr::from_ref(plan).cast_mut().cast::<c_void>();
    // SAFETY: `stack.top()` is the 16-byte-aligned top of a writable mapping used by nothing
    // else while this thread is suspended in clone (CLONE_VFORK), and `plan` outlives the call.
    // `child_main` keeps the rules of a vfork child listed in the module docs. With
    // CLONE_PIDFD the kernel writes the pidfd through the (variadic) parent_tid pointer,
    // which points to a live local.
    let pid = unsafe { libc::clone(child_main, stack.top(), flags, arg, &raw mut pidfd) };
    if pid < 0 {
        return Err(Errno::last());
    }
    // SAFETY: clone succeeded, so the kernel installed a new pidfd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok((Pid::from_raw(pid), pidfd))
}

/// The child's whole life: set up, then exec; on failure record why and exit 127.
#[allow(unsafe_code)]
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `&Plan` passed to clone; the parent keeps it alive and does not
    // touch it until the child has exec'd or exited.
    let plan = unsafe { &*arg.cast_const().cast::<Plan>() };
    plan.record(child::run(plan));
    child::exit(127)
}

/// What runs in the child. Only raw syscalls on memory prepared before clone.
mod child {
    use super::*;

    type Failure = (Stage, i32, usize);

    /// Sets the child up and execs; returns only on failure.
    pub(super) fn run(plan: &Plan) -> Failure {
        match setup(plan) {
            Ok(()) => exec(plan),
            Err(failure) => failure,
        }
    }

    fn setup(plan: &Plan) -> Result<(), Failure> {
        // First, so that everything the job ever does is counted and limited.
        for (index, &fd) in plan.cgroups.iter().enumerate() {
            let own = b"0";
            let written = syscall3(libc::SYS_write, c_long::from(fd), own.as_ptr() as c_long, 1);
            check(written).map_err(|errno| (Stage::Cgroup, errno, index))?;
        }
        // The job starts with every catchable signal at its default action, whatever the
        // worker catches or ignores (Rust ignores SIGPIPE, for one).
        for signal in 1..=LAST_SIGNAL {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                // Numbers glibc reserves may refuse: nothing to reset there.
                let _ = default_action(signal);
            }
        }
        for (target, &fd) in plan.stdio.iter().enumerate() {
            // The fds are 3 or above (the caller guarantees it), so no dup clobbers another.
            check(dup3(fd, target)).map_err(|errno| (Stage::Stdio, errno, target))?;
        }
        for (index, &fd) in plan.passed.iter().enumerate() {
            // Each source is above every target (the caller guarantees it); dup3 without
            // O_CLOEXEC leaves the copy open across exec.
            let target = PASSED_BASE as usize + index;
            check(dup3(fd, target)).map_err(|errno| (Stage::Stdio, errno, target))?;
        }
        check(syscall1(libc::SYS_chdir, plan.dir.as_ptr() as c_long))
            .map_err(|errno| (Stage::Chdir, errno, 0))?;
        // A new session and process group: killpg then reaches every descendant that does not
        // call setsid itself, and the job has no controlling terminal.
        check(syscall0(libc::SYS_setsid)).map_err(|errno| (Stage::Setsid, errno, 0))?;
        // setuid binaries (su, sudo) cannot give the job more privileges than it starts with.
        check(prctl_no_new_privs()).map_err(|errno| (Stage::NoNewPrivs, errno, 0))?;
        if let Some((uid, gid)) = plan.switch_to {
            check(syscall2(libc::SYS_setgroups, 0, 0))
                .map_err(|errno| (Stage::Setgroups, errno, 0))?;
            let gid = c_long::from(gid);
            check(syscall3(libc::SYS_setresgid, gid, gid, gid))
                .map_err(|errno| (Stage::Setgid, errno, 0))?;
            let uid = c_long::from(uid);
            check(syscall3(libc::SYS_setresuid, uid, uid, uid))
                .map_err(|errno| (Stage::Setuid, errno, 0))?;
        }
        // After setuid: setuid marks the process PF_NPROC_EXCEEDED when the new user already has
        // RLIMIT_NPROC processes, and execve then fails with EAGAIN. The limit in force at
        // setuid time is the worker's, so the job's own limit must come after.
        for (index, rlimit) in plan.rlimits.iter().enumerate() {
            check(set_rlimit(rlimit)).map_err(|errno| (Stage::Rlimit, errno, index))?;
        }
        // Last: an empty mask, as the job should start with (the worker's threads may block
        // some). Every handler is already the default, so nothing of the worker runs here.
        let empty: u64 = 0;
        let _ = syscall4(
            libc::SYS_rt_sigprocmask,
            c_long::from(libc::SIG_SETMASK),
            ptr::from_ref(&empty) as c_long,
            0,
            KERNEL_SIGSET_BYTES as c_long,
        );
        Ok(())
    }

    /// Tries each candidate as `execvp` does: keep going past paths that do not exist or
    /// cannot be searched, remember EACCES, stop at any other error.
    fn exec(plan: &Plan) -> Failure {
        let mut denied = None;
        let mut last = (libc::ENOENT, 0);
        for (index, candidate) in plan.candidates.iter().enumerate() {
            let errno = match check(syscall3(
                libc::SYS_execve,
                candidate.as_ptr() as c_long,
                plan.argv_ptrs.as_ptr() as c_long,
                plan.envp_ptrs.as_ptr() as c_long,
            )) {
                Ok(()) => libc::EIO, // execve does not return on success
                Err(errno) => errno,
            };
            match errno {
                libc::EACCES => denied = denied.or(Some(index)),
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => return (Stage::Exec, errno, index),
            }
            last = (errno, index);
        }
        match denied {
            Some(index) => (Stage::Exec, libc::EACCES, index),
            None => (Stage::Exec, last.0, last.1),
        }
    }

    /// Leaves the child without running any of the worker's exit handlers.
    #[allow(unsafe_code)]
    pub(super) fn exit(code: c_int) -> ! {
        // SAFETY: _exit only makes the exit_group syscall.
        unsafe { libc::_exit(code) }
    }

    fn default_action(signal: c_int) -> c_long {
        // The kernel's struct sigaction, all zero: SIG_DFL, no flags, empty mask. Oversized,
        // so its layout on any architecture fits inside.
        let default = [0u64; 8];
        syscall4(
            libc::SYS_rt_sigaction,
            c_long::from(signal),
            ptr::from_ref(&default) as c_long,
            0,
            KERNEL_SIGSET_BYTES as c_long,
        )
    }

    fn dup3(fd: RawFd, target: usize) -> c_long {
        if usize::try_from(fd) == Ok(target) {
            return 0;
        }
        syscall3(libc::SYS_dup3, c_long::from(fd), target as c_long, 0)
    }

    #[allow(unsafe_code)]
    fn prctl_no_new_privs() -> c_long {
        let no_new_privs = c_long::from(libc::PR_SET_NO_NEW_PRIVS);
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes no pointers.
        unsafe {
            libc::syscall(
                libc::SYS_prctl,
                no_new_privs,
                1 as c_long,
                0 as c_long,
                0 as c_long,
                0 as c_long,
            )
        }
    }

    fn set_rlimit(rlimit: &RawRlimit) -> c_long {
        syscall4(
            libc::SYS_prlimit64,
            0,
            c_long::from(rlimit.resource),
            ptr::from_ref(&rlimit.limit) as c_long,
            0,
        )
    }

    #[allow(unsafe_code)]
    fn syscall0(number: c_long) -> c_long {
        // SAFETY: a syscall without arguments.
        unsafe { libc::syscall(number) }
    }

    #[allow(unsafe_code)]
    fn syscall1(number: c_long, a: c_long) -> c_long {
        // SAFETY: every caller passes integers, or pointers to live memory of the type the
        // syscall expects (NUL-terminated strings, null-terminated pointer arrays, structs).
        unsafe { libc::syscall(number, a) }
    }

    #[allow(unsafe_code)]
    fn syscall2(number: c_long, a: c_long, b: c_long) -> c_long {
        // SAFETY: as in `syscall1`.
        unsafe { libc::syscall(number, a, b) }
    }

    #[allow(unsafe_code)]
    fn syscall3(number: c_long, a: c_long, b: c_long, c: c_long) -> c_long {
        // SAFETY: as in `syscall1`.
        unsafe { libc::syscall(number, a, b, c) }
    }

    #[allow(unsafe_code)]
    fn syscall4(number: c_long, a: c_long, b: c_long, c: c_long, d: c_long) -> c_long {
        // SAFETY: as in `syscall1`.
        unsafe { libc::syscall(number, a, b, c, d) }
    }

    /// The errno of a failed raw syscall. errno lives in the parent thread's TLS, which the
    /// child shares; the parent is suspended, and clone's result is what it reads next.
    fn check(rc: c_long) -> Result<(), i32> {
        if rc < 0 {
            Err(Errno::last_raw())
        } else {
            Ok(())
        }
    }
}

/// Blocks every signal on the calling thread until dropped, so the child starts with all
/// signals blocked (it inherits the mask) and no worker handler can run in it.
struct SignalsBlocked {
    previous: u64,
}

impl SignalsBlocked {
    #[allow(unsafe_code)]
    fn all() -> Self {
        let all: u64 = !0;
        let mut previous: u64 = 0;
        // SAFETY: both pointers are to live u64 locals, the kernel's sigset size here. A raw
        // syscall, because glibc's wrapper leaves its own internal signals unblocked.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                c_long::from(libc::SIG_SETMASK),
                &raw const all,
                &raw mut previous,
                KERNEL_SIGSET_BYTES,
            );
        }
        Self { previous }
    }
}

impl Drop for SignalsBlocked {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: a pointer to a live u64 holding the mask saved above.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                c_long::from(libc::SIG_SETMASK),
                &raw const self.previous,
                ptr::null_mut::<u64>(),
                KERNEL_SIGSET_BYTES,
            );
        }
    }
}

thread_local! {
    /// One stack per thread that launches, kept between launches: mapping and unmapping one
    /// per job would cost TLB shootdowns on every thread of the worker.
    static STACK: Cell<Option<ChildStack>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's child stack, mapping it on first use.
fn with_stack<R>(f: impl FnOnce(&ChildStack) -> R) -> io::Result<R> {
    let stack = match STACK.take() {
        Some(stack) => stack,
        None => ChildStack::map()?,
    };
    let result = f(&stack);
    STACK.set(Some(stack));
    Ok(result)
}

/// A private mapping with a guard page at its low end, so a child that overflows its stack
/// dies of SIGSEGV instead of writing into the worker's memory.
struct ChildStack {
    base: *mut c_void,
    len: usize,
    guard: usize,
}

impl ChildStack {
    #[allow(unsafe_code)]
    fn map() -> io::Result<Self> {
        // SAFETY: sysconf takes no pointers.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = STACK_SIZE + page;
        // SAFETY: a new anonymous mapping chosen by the kernel; it overlaps nothing of ours.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Self {
            base,
            len,
            guard: page,
        };
        // SAFETY: the first page of the mapping just made, which nothing uses yet.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The initial stack pointer: the mapping's end (page-aligned, so 16-byte aligned).
    fn top(&self) -> *mut c_void {
        debug_assert!(self.len > self.guard);
        self.base.wrapping_byte_add(self.len)
    }
}

impl Drop for ChildStack {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`, which no child uses any more
        // (each launch returns only after its child has exec'd or exited).
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

#[cfg(test)]
mod tests;
