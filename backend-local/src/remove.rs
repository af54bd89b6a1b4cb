//! Removing a job's working directory without ever following a link.
//!
//! The job, or a process of it that escaped, may still be changing the tree while it is
//! removed, and can swap a directory for a symlink between any two calls. A path-based walk
//! (`symlink_metadata`, then `chmod` or `read_dir` on the same path) then acts on whatever the
//! link points to: with a root worker, anywhere on the host. So every step here works on a
//! directory fd and one name inside it: `openat(O_NOFOLLOW | O_DIRECTORY)` to descend,
//! `unlinkat` to remove, `fchmod` on the fd this walk opened, and `fchmodat(NOFOLLOW)`, which
//! refuses symlinks, for a directory that cannot be opened yet. A symlink is only ever
//! unlinked. The tree's parent (the work root) is the operator's and is trusted.
//!
//! A root worker never needs to unlock anything (it may open and unlink regardless of modes);
//! a worker running jobs as its own user does, when a job made its directories unwritable.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{FchmodatFlags, Mode, fchmod, fchmodat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Names read from a directory before acting on them; the directory is read again after.
const BATCH: usize = 256;

/// Most entries one removal unlinks (or retries) before giving up: a process of the job that
/// escaped and keeps writing must not hold a removal thread forever.
pub(super) const MAX_OPERATIONS: u64 = 1 << 22;

/// Attempts at one entry that keeps changing type (a directory swapped for a link and back).
const MAX_ATTEMPTS: usize = 16;

/// Owner-only access, which a directory of the tree gets when it must be unlocked.
const UNLOCKED: Mode = Mode::S_IRWXU;

/// What a removal was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Opening the trusted parent directory.
    OpenParent,
    /// Opening a directory of the tree (`openat` with O_NOFOLLOW).
    OpenDir,
    /// Reading a directory's entries.
    ReadDir,
    /// Making a directory of the tree writable for its owner.
    Unlock,
    /// Unlinking a file, link or empty directory.
    Unlink,
}

impl Step {
    fn describe(self) -> &'static str {
        match self {
            Self::OpenParent => "opening the work root",
            Self::OpenDir => "opening a directory without following links",
            Self::ReadDir => "reading a directory",
            Self::Unlock => "making a directory writable",
            Self::Unlink => "unlinking an entry",
        }
    }
}

/// Why a tree could not be removed completely.
#[derive(Debug, thiserror::Error)]
pub(super) enum RemoveError {
    /// A system call failed on an entry of the tree.
    #[error("{} failed at `{}`: {errno}", .step.describe(), .path.display())]
    Io {
        /// What was being done.
        step: Step,
        /// The entry, as a path for people (never used to act on it).
        path: PathBuf,
        /// The error.
        #[source]
        errno: Errno,
    },
    /// Something kept adding entries while the tree was being removed.
    #[error(
        "gave up after {MAX_OPERATIONS} operations: entries kept appearing (a process of the job \
         survived it and keeps writing?)"
    )]
    Endless,
    /// The tree's path has no parent or no final name.
    #[error("`{}` is not a directory inside a parent directory", .0.display())]
    NotATree(PathBuf),
}

/// Removes the directory `path` and everything in it, following no link; a link is removed
/// itself, never what it points to.
pub(super) fn remove_tree(path: &Path) -> Result<(), RemoveError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(RemoveError::NotATree(path.to_path_buf()));
    };
    let name = CString::new(name.as_bytes()).map_err(|_| RemoveError::NotATree(path.into()))?;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let parent_fd = open(parent, flags, Mode::empty()).map_err(|errno| RemoveError::Io {
        step: Step::OpenParent,
        path: parent.to_path_buf(),
        errno,
    })?;
    Walk {
        root: path,
        stack: Vec::new(),
        operations: 0,
    }
    .run(parent_fd.as_fd(), name)
}

/// A directory being emptied: its fd, its name in its parent, and whether it was unlocked.
struct Frame {
    dir: Dir,
    name: CString,
    unlocked: bool,
}

/// One removal: the directories open from the tree's top down to the one being emptied.
struct Walk<'a> {
    root: &'a Path,
    stack: Vec<Frame>,
    operations: u64,
}

/// An entry after an attempt to remove it.
enum Entry {
    /// Removed, or already gone.
    Gone,
    /// A directory, opened, to be emptied first.
    Directory(Dir),
}

impl Walk<'_> {
    fn run(mut self, parent: BorrowedFd<'_>, name: CString) -> Result<(), RemoveError> {
        match self.remove_entry(parent, &name)? {
            Entry::Gone => return Ok(()),
            Entry::Directory(dir) => self.stack.push(Frame {
                dir,
                name,
                unlocked: false,
            }),
        }
        while !self.stack.is_empty() {
            self.count()?;
            let names = self.read_batch()?;
            if names.is_empty() {
                self.remove_emptied(parent)?;
                continue;
            }
            if let Some(frame) = self.remove_batch(&names)? {
                self.stack.push(frame);
            }
        }
        Ok(())
    }

    /// Removes each of `names` from the directory on top of the stack, stopping at the first
    /// directory, which it returns opened.
    fn remove_batch(&mut self, names: &[CString]) -> Result<Option<Frame>, RemoveError> {
        for name in names {
            self.count()?;
            let top = self.stack.len() - 1;
            let entry = loop {
                let frame = &self.stack[top];
                match self.remove_entry(frame.dir.as_fd(), name) {
                    Err(RemoveError::Io {
                        step: Step::Unlink | Step::OpenDir | Step::Unlock,
                        errno: Errno::EACCES | Errno::EPERM,
                        ..
                    }) if !frame.unlocked => self.unlock_top()?,
                    outcome => break outcome?,
                }
            };
            if let Entry::Directory(dir) = entry {
                return Ok(Some(Frame {
                    dir,
                    name: name.clone(),
                    unlocked: false,
                }));
            }
        }
        Ok(None)
    }

    /// Removes `name` in `parent` if it is not a directory, else opens it (making it
    /// accessible first if this worker may not open it).
    fn remove_entry(&self, parent: BorrowedFd<'_>, name: &CStr) -> Result<Entry, RemoveError> {
        let mut unlocked = false;
        for _ in 0..MAX_ATTEMPTS {
            match unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => return Ok(Entry::Gone),
                // Linux answers EISDIR for a directory.
                Err(Errno::EISDIR) => {}
                Err(errno) => return Err(self.error(Step::Unlink, name, errno)),
            }
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            match openat(parent, name, flags, Mode::empty()) {
                Ok(fd) => {
                    let dir =
                        Dir::from_fd(fd).map_err(|errno| self.error(Step::OpenDir, name, errno))?;
                    return Ok(Entry::Directory(dir));
                }
                Err(Errno::ENOENT) => return Ok(Entry::Gone),
                // Swapped for a link or a file since the unlink: unlink that instead.
                Err(Errno::ELOOP | Errno::ENOTDIR) => {}
                // Not readable by this (non-root) worker. NOFOLLOW: a link here is refused,
                // not followed; only a directory of the tree changes mode.
                Err(Errno::EACCES) if !unlocked => {
                    unlocked = true;
                    match fchmodat(parent, name, UNLOCKED, FchmodatFlags::NoFollowSymlink) {
                        Ok(()) | Err(Errno::EOPNOTSUPP | Errno::ENOENT) => {}
                        Err(errno) => return Err(self.error(Step::Unlock, name, errno)),
                    }
                }
                Err(errno) => return Err(self.error(Step::OpenDir, name, errno)),
            }
        }
        Err(self.error(Step::OpenDir, name, Errno::EAGAIN))
    }

    /// Up to [`BATCH`] names in the directory on top of the stack, from its start.
    fn read_batch(&mut self) -> Result<Vec<CString>, RemoveError> {
        let mut names = Vec::new();
        let mut failed = None;
        let Some(top) = self.stack.last_mut() else {
            return Ok(names);
        };
        // The iterator rewinds the directory when dropped, so every batch starts afresh.
        for entry in top.dir.iter() {
            match entry {
                Ok(entry) => {
                    let name = entry.file_name();
                    if name != c"." && name != c".." {
                        names.push(name.to_owned());
                    }
                }
                Err(errno) => {
                    failed = Some(errno);
                    break;
                }
            }
            if names.len() == BATCH {
                break;
            }
        }
        match failed {
            Some(errno) => Err(self.error(Step::ReadDir, c"", errno)),
            None => Ok(names),
        }
    }

    /// The directory on top of the stack reads as empty: remove it from its parent.
    fn remove_emptied(&mut self, tree_parent: BorrowedFd<'_>) -> Result<(), RemoveError> {
        let Some(frame) = self.stack.pop() else {
            return Ok(());
        };
        loop {
            let parent = self.stack.last().map_or(tree_parent, |up| up.dir.as_fd());
            match unlinkat(parent, frame.name.as_c_str(), UnlinkatFlags::RemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => return Ok(()),
                // Something wrote into it after it was read: empty it again.
                Err(Errno::ENOTEMPTY | Errno::EEXIST) => {
                    self.stack.push(frame);
                    return Ok(());
                }
                // The name now holds something else (the directory was moved and a link put
                // in its place): deal with that. The moved directory, if still in the tree,
                // turns up when its parent is read again.
                Err(Errno::ENOTDIR) => {
                    if let Entry::Directory(dir) = self.remove_entry(parent, &frame.name)? {
                        self.stack.push(Frame {
                            dir,
                            name: frame.name,
                            unlocked: false,
                        });
                    }
                    return Ok(());
                }
                // Its parent, a directory of the tree, is not writable: unlock it and retry.
                Err(Errno::EACCES | Errno::EPERM)
                    if self.stack.last().is_some_and(|up| !up.unlocked) =>
                {
                    self.unlock_top()?;
                }
                Err(errno) => return Err(self.error(Step::Unlink, &frame.name, errno)),
            }
        }
    }

    /// Makes the directory on top of the stack writable for its owner, through its own fd.
    fn unlock_top(&mut self) -> Result<(), RemoveError> {
        let Some(top) = self.stack.last_mut() else {
            return Ok(());
        };
        top.unlocked = true;
        match fchmod(top.dir.as_fd(), UNLOCKED) {
            Ok(()) => Ok(()),
            Err(errno) => {
                let name = top.name.clone();
                Err(self.error(Step::Unlock, &name, errno))
            }
        }
    }

    fn count(&mut self) -> Result<(), RemoveError> {
        self.operations += 1;
        if self.operations > MAX_OPERATIONS {
            return Err(RemoveError::Endless);
        }
        Ok(())
    }

    /// An error at `name` inside the directory on top of the stack (at the tree itself while
    /// nothing is open), as a path for people.
    fn error(&self, step: Step, name: &CStr, errno: Errno) -> RemoveError {
        let mut path = self.root.to_path_buf();
        if !self.stack.is_empty() {
            for frame in self.stack.iter().skip(1) {
                path.push(OsStr::from_bytes(frame.name.as_bytes()));
            }
            if !name.is_empty() {
                path.push(OsStr::from_bytes(name.to_bytes()));
            }
        }
        RemoveError::Io { step, path, errno }
    }
}

#[cfg(test)]
mod tests;
