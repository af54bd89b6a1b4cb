//! Working directories a dead worker left behind (a crash, `kill -9`, a power cut): the
//! request's files, what the job wrote, a session's state. Each live directory is locked
//! (`flock`) by the worker that made it for as long as it exists ([`hold`]); when a backend
//! starts, it removes every `openshell-job-*` directory of its work root whose lock is free,
//! with the same link-safe walk as a job's own removal. Workers sharing a work root (and
//! host) keep their own: a lock held by any live process is respected.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::libc;

use super::remove::remove_tree;

/// Name prefix of the working directories this backend makes.
pub(super) const PREFIX: &str = "openshell-job-";

/// Directories younger than this are left alone: another worker may have made one a moment
/// ago and not locked it yet.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// A working directory's lock, held until dropped.
pub(super) type Held = Flock<File>;

/// Locks `dir` (a directory just made, never a link) for as long as the returned lock lives.
pub(super) fn hold(dir: &Path) -> io::Result<Held> {
    Flock::lock(open_dir(dir)?, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| io::Error::from(errno))
}

/// Removes the working directories under `root` that no live process holds; returns how many
/// went, and logs what could not be removed.
pub(super) fn sweep(root: &Path) -> usize {
    let Ok(entries) = fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        // `file_type` does not follow links: a link named like a workdir is skipped.
        let candidate = name.to_str().is_some_and(|name| name.starts_with(PREFIX))
            && entry.file_type().is_ok_and(|kind| kind.is_dir())
            && entry
                .metadata()
                .and_then(|metadata| metadata.modified())
                .is_ok_and(|modified| modified.elapsed().is_ok_and(|age| age >= STALE_AFTER));
        if !candidate {
            continue;
        }
        let path = entry.path();
        // Held while it is removed, so a second sweeper leaves it to this one.
        let Ok(_held) = hold(&path) else {
            continue;
        };
        match remove_tree(&path) {
            Ok(()) => removed += 1,
            Err(error) => tracing::warn!(
                path = %path.display(),
                "could not remove a working directory a dead worker left: {error}; remove it by hand"
            ),
        }
    }
    if removed > 0 {
        tracing::info!(
            removed,
            root = %root.display(),
            "removed working directories left by workers that died"
        );
    }
    removed
}

fn open_dir(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::time::SystemTime;

    use super::*;

    /// Makes `dir` look older than [`STALE_AFTER`].
    fn age(dir: &Path) {
        let old = SystemTime::now() - STALE_AFTER * 2;
        File::open(dir).unwrap().set_modified(old).unwrap();
    }

    #[test]
    fn only_old_unlocked_workdirs_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let dead = root.path().join(format!("{PREFIX}dead"));
        fs::create_dir_all(dead.join("nested")).unwrap();
        fs::write(dead.join("nested/secret"), b"tenant data").unwrap();
        let live = root.path().join(format!("{PREFIX}live"));
        fs::create_dir(&live).unwrap();
        let young = root.path().join(format!("{PREFIX}young"));
        fs::create_dir(&young).unwrap();
        let other = root.path().join("someone-else");
        fs::create_dir(&other).unwrap();
        let target = tempfile::tempdir().unwrap();
        fs::write(target.path().join("kept"), b"").unwrap();
        let link = root.path().join(format!("{PREFIX}link"));
        std::os::unix::fs::symlink(target.path(), &link).unwrap();
        for dir in [&dead, &live, &other] {
            age(dir);
        }
        let _held = hold(&live).unwrap();

        assert_eq!(sweep(root.path()), 1);
        assert!(!dead.exists(), "a dead worker's directory is removed");
        assert!(live.exists(), "a held directory stays");
        assert!(young.exists(), "a directory made a moment ago stays");
        assert!(
            other.exists(),
            "only this backend's directories are touched"
        );
        assert!(
            target.path().join("kept").exists(),
            "a link is never followed"
        );
    }

    #[test]
    #[allow(
        clippy::disallowed_methods,
        reason = "a plain test thread, no runtime to block"
    )]
    fn a_lock_held_by_another_process_is_respected_until_it_dies() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(format!("{PREFIX}other-worker"));
        fs::create_dir(&dir).unwrap();
        age(&dir);
        // flock(1) stands in for another worker holding its job's directory.
        let mut holder = std::process::Command::new("flock")
            .arg("-x")
            .arg(&dir)
            .args(["sleep", "30"])
            .process_group(0)
            .spawn()
            .expect("flock(1) from util-linux");
        for _ in 0..1000 {
            if hold(&dir).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(sweep(root.path()), 0);
        assert!(dir.exists(), "another live process's directory stays");
        // The whole group: sleep(1) inherited the lock.
        let group = nix::unistd::Pid::from_raw(i32::try_from(holder.id()).unwrap());
        nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();
        holder.wait().unwrap();
        // sleep(1) is not our child: its lock goes when the kernel has reaped it.
        for _ in 0..1000 {
            if hold(&dir).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(sweep(root.path()), 1);
        assert!(!dir.exists(), "a dead process's directory is removed");
    }

    #[test]
    fn a_directory_is_held_once() {
        let root = tempfile::tempdir().unwrap();
        let held = hold(root.path()).unwrap();
        assert!(hold(root.path()).is_err(), "a second lock is refused");
        drop(held);
        assert!(hold(root.path()).is_ok(), "the lock goes with its holder");
    }
}
