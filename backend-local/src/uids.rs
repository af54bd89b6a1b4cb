//! A uid of its own for each running job, from a range (`[pools.NAME.local] uids`), as the
//! `isolate` sandbox does.
//!
//! With one shared job user, RLIMIT_NPROC counts every running job's processes together, so one
//! tenant's fork bomb starves another's job of processes. A uid per job makes the limit the
//! job's own. A uid goes back to the range only when nothing of its job is left, which only the
//! sandbox guarantees (it kills the job's whole pid namespace): without it a survivor would
//! keep the uid for the next job, so the range needs the sandbox. Each uid is locked with
//! `flock` on a file under [`LOCK_DIR`] while a job uses it, so workers sharing a host and a
//! range never hand one uid to two jobs.

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Uid, User};
use openshell_protocol::ErrorKind;
use serde::{Deserialize, Serialize};

use super::KIND;
use super::user::RunAs;
use openshell_backend::BackendError;

/// Where the per-uid lock files live (root's, mode 0700).
pub(super) const LOCK_DIR: &str = "/run/openshell/local-uids";

/// The most uids a range may have: the start-up check looks each one up.
pub const MAX_UIDS: u32 = 65_536;

/// `[pools.NAME.local] uids = { first = ..., count = ... }`: the uids jobs run as, one per
/// running job, each with the group of the same number. None of them may be a user of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UidRange {
    /// The first uid.
    pub first: u32,
    /// How many, from `first`: at least the pool's slots.
    pub count: u32,
}

impl UidRange {
    /// The uids of the range.
    fn uids(self) -> std::ops::Range<u32> {
        self.first..self.first.saturating_add(self.count)
    }

    /// Refuses ranges that are empty, too large, reach root, the worker's own uid, or a user
    /// of this host.
    fn check(self) -> Result<(), BackendError> {
        let fail = |why: String| {
            Err(error(format!(
                "[pools.NAME.local] uids = {{ first = {}, count = {} }} {why}",
                self.first, self.count
            )))
        };
        if self.count == 0 || self.count > MAX_UIDS {
            return fail(format!("must have 1 to {MAX_UIDS} uids"));
        }
        if self.first == 0 || self.first.checked_add(self.count).is_none() {
            return fail("must not include uid 0 or run past the last uid".to_string());
        }
        if self.uids().contains(&Uid::effective().as_raw()) {
            return fail("includes the worker's own uid".to_string());
        }
        if let Some(user) = self
            .uids()
            .find_map(|uid| User::from_uid(Uid::from_raw(uid)).ok().flatten())
        {
            return fail(format!(
                "includes uid {} of the host's user `{}`: pick uids no account uses",
                user.uid, user.name
            ));
        }
        Ok(())
    }
}

/// The range's uids not in use by a job of this worker.
#[derive(Debug)]
pub(super) struct UidPool {
    range: UidRange,
    locks: PathBuf,
    free: Mutex<Vec<u32>>,
}

/// One job's uid, locked until dropped.
#[derive(Debug)]
pub(super) struct Lease {
    uid: u32,
    pool: Arc<UidPool>,
    _lock: Flock<File>,
}

impl Lease {
    /// The job's identity: the leased uid and the group of the same number.
    pub fn run_as(&self) -> RunAs {
        RunAs {
            name: format!("uid {}", self.uid),
            uid: Uid::from_raw(self.uid),
            gid: Gid::from_raw(self.uid),
            switch: true,
            per_job: true,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut free = self
            .pool
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        free.push(self.uid);
    }
}

impl UidPool {
    /// A pool over `range`, checked against this host, with its lock directory made.
    pub fn new(range: UidRange) -> Result<Arc<Self>, BackendError> {
        range.check()?;
        Self::with_locks(range, Path::new(LOCK_DIR))
    }

    fn with_locks(range: UidRange, locks: &Path) -> Result<Arc<Self>, BackendError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(locks)
            .map_err(|failure| {
                error(format!(
                    "creating the uid lock directory {} failed: {failure}",
                    locks.display()
                ))
            })?;
        Ok(Arc::new(Self {
            range,
            locks: locks.to_path_buf(),
            // Popped from the end: the lowest uids first.
            free: Mutex::new(range.uids().rev().collect()),
        }))
    }

    /// A uid no other job (of this worker or another sharing the lock directory) is using.
    pub fn lease(self: &Arc<Self>) -> Result<Lease, BackendError> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        // Uids another worker holds stay out of the list until a later lease finds them free.
        let mut taken = Vec::new();
        let mut leased = None;
        while let Some(uid) = free.pop() {
            match self.lock(uid)? {
                Some(lock) => {
                    leased = Some((uid, lock));
                    break;
                }
                None => taken.push(uid),
            }
        }
        free.extend(taken.into_iter().rev());
        drop(free);
        let Some((uid, lock)) = leased else {
            return Err(BackendError::new(
                ErrorKind::SandboxStartFailed,
                KIND,
                format!("uids {}..{}", self.range.first, self.range.uids().end),
                format!(
                    "all {} job uids are in use (by this worker's jobs or another worker's on this host); \
                     raise [pools.NAME.local] uids count to at least the slots of every pool sharing them",
                    self.range.count
                ),
            ));
        };
        Ok(Lease {
            uid,
            pool: Arc::clone(self),
            _lock: lock,
        })
    }

    /// The lock of `uid`, or `None` when another process holds it.
    fn lock(&self, uid: u32) -> Result<Option<Flock<File>>, BackendError> {
        let path = self.locks.join(uid.to_string());
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|failure| error(format!("opening {} failed: {failure}", path.display())))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(error(format!("locking {} failed: {errno}", path.display()))),
        }
    }
}

fn error(message: String) -> BackendError {
    BackendError::new(ErrorKind::SandboxStartFailed, KIND, "uids", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: u32, count: u32) -> UidRange {
        UidRange { first, count }
    }

    #[test]
    fn ranges_that_reach_root_or_a_user_or_nothing_are_refused() {
        for bad in [
            range(0, 10),
            range(100, 0),
            range(u32::MAX - 1, 5),
            range(1, MAX_UIDS + 1),
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        // uid 0 is root's; nobody (65534) is a user on Debian.
        let users = range(65_530, 10).check().unwrap_err();
        assert!(users.to_string().contains("host's user"), "{users}");
        assert!(range(1_900_000_000, 64).check().is_ok());
    }

    #[test]
    fn each_lease_has_its_own_uid_until_dropped_and_workers_share_the_locks() {
        let locks = tempfile::tempdir().unwrap();
        let uids = range(1_900_000_000, 2);
        let pool = UidPool::with_locks(uids, locks.path()).unwrap();
        let other_worker = UidPool::with_locks(uids, locks.path()).unwrap();
        let first = pool.lease().unwrap();
        let second = other_worker.lease().unwrap();
        assert_eq!(first.run_as().uid.as_raw(), 1_900_000_000);
        assert_eq!(
            second.run_as().uid.as_raw(),
            1_900_000_001,
            "the other worker skips a locked uid"
        );
        assert_eq!(second.run_as().gid.as_raw(), 1_900_000_001);
        let full = pool.lease().unwrap_err();
        assert!(
            full.to_string().contains("all 2 job uids are in use"),
            "{full}"
        );
        drop(first);
        assert_eq!(
            other_worker.lease().unwrap().run_as().uid.as_raw(),
            1_900_000_000
        );
    }
}
