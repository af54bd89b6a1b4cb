//! The host's view of a session's sandbox: which processes are in it, and killing them
//! through pidfds so that a pid reused by a stranger is never signalled.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::libc;
use nix::unistd::Pid;

/// One pass over the host's processes: SIGKILLs each live one in `namespace` but `spared`, and
/// says how many there were.
pub(super) fn kill_round(namespace: &str, spared: &[Pid]) -> usize {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 1;
    };
    let mut found = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
            .map(Pid::from_raw)
        else {
            continue;
        };
        if spared.contains(&pid) || namespace_of(pid).ok().as_deref() != Some(namespace) {
            continue;
        }
        // Through a pidfd, checked again once held: never a stranger that reused the pid.
        let Ok(pidfd) = pidfd_open(pid) else {
            continue;
        };
        if namespace_of(pid).ok().as_deref() != Some(namespace) || is_zombie(pid) {
            continue;
        }
        found += 1;
        pidfd_kill(&pidfd);
    }
    found
}

/// The pid namespace of `pid`, as `/proc/PID/ns/pid` reads.
pub(super) fn namespace_of(pid: Pid) -> io::Result<String> {
    fs::read_link(format!("/proc/{pid}/ns/pid")).map(|link| link.display().to_string())
}

/// Whether `pid` is a zombie (its state, after the command in `/proc/PID/stat`, is `Z`).
pub(super) fn is_zombie(pid: Pid) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

/// The first child of `pid`, as `/proc/PID/task/PID/children` lists.
pub(super) fn child_of(pid: Pid) -> Option<Pid> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
        .map(Pid::from_raw)
}

/// A pidfd for `pid`.
#[allow(unsafe_code)]
fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned this new fd, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// SIGKILLs the process of `pidfd`.
#[allow(unsafe_code)]
fn pidfd_kill(pidfd: &OwnedFd) {
    // SAFETY: a live pidfd, a signal number, a null siginfo and no flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}
