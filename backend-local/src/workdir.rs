//! A job's private working directory: created owned by the run-as user, filled with the
//! request's files, and removed afterwards.
//!
//! Creating a directory and writing a small request into it takes microseconds, less than
//! handing the work to a blocking thread, so it runs inline. Removal can be slow (an `rmdir`
//! waits for the filesystem's journal, and the job may have left many files), so it runs on
//! a blocking thread once the job's result is known.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt, chown};
use std::path::{Path, PathBuf};

use nix::libc;
use nix::unistd::{Gid, Uid};
use openshell_protocol::ErrorKind;

use super::KIND;
use super::remove::remove_tree;
use super::stale;
use openshell_backend::{BackendError, JobFile};

/// Requests with at most this many files, of at most [`INLINE_BYTES`] together, are written
/// on the calling task; larger ones on a blocking thread.
pub(super) const INLINE_FILES: usize = 32;

/// See [`INLINE_FILES`].
pub(super) const INLINE_BYTES: usize = 256 * 1024;

/// The job's temporary directory; dropping it removes it, logging what could not be removed.
#[derive(Debug)]
pub(super) struct Workdir {
    path: PathBuf,
    owner: Option<(Uid, Gid)>,
    /// Its lock, telling sweepers it is alive (see [`stale`]); released after removal.
    _held: Option<stale::Held>,
}

impl Workdir {
    /// Whether `files` are small enough to write without leaving the async threads.
    pub fn is_small(files: &[JobFile]) -> bool {
        files.len() <= INLINE_FILES
            && files.iter().map(|file| file.content.len()).sum::<usize>() <= INLINE_BYTES
    }

    /// Creates a mode-0700 directory under `root`, owned by `owner` when given (the worker is
    /// root), and writes `files` into it. It is the job's HOME and TMPDIR as well as its working
    /// directory, as with the SSH backend: one directory per job keeps the filesystem work
    /// (an inode and a directory block to allocate and free) to the minimum.
    pub fn create(
        root: &Path,
        owner: Option<(Uid, Gid)>,
        files: &[JobFile],
    ) -> Result<Self, BackendError> {
        let relative = check_files(files)?;
        let dir = tempfile::Builder::new()
            .prefix(stale::PREFIX)
            .permissions(Permissions::from_mode(0o700))
            .tempdir_in(root)
            .map_err(|error| {
                io_error(
                    root,
                    "creating the job's working directory",
                    error,
                    "check that work_root exists and is writable",
                )
            })?;
        // From here on, dropping `workdir` (on an error below, too) removes the directory.
        let path = dir.keep();
        let held = stale::hold(&path)
            .inspect_err(|error| {
                tracing::debug!(%error, path = %path.display(), "working directory not locked; a sweeper after a crash may leave it");
            })
            .ok();
        let workdir = Self {
            path,
            owner,
            _held: held,
        };
        for (file, relative) in files.iter().zip(&relative) {
            workdir.write((file, relative))?;
        }
        // Last: until now the directory is root's and 0700, so no process of the run-as user
        // (one that escaped an earlier job) can plant anything in it while it is filled.
        workdir.own(workdir.path())?;
        Ok(workdir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The job's whole environment: a minimal base, with the request's variables on top.
    pub fn env(&self, path: &str, extra: &BTreeMap<String, String>) -> BTreeMap<String, OsString> {
        let mut env = BTreeMap::from([
            ("PATH".to_string(), OsString::from(path)),
            ("HOME".to_string(), self.path().as_os_str().to_owned()),
            ("TMPDIR".to_string(), self.path().as_os_str().to_owned()),
            ("LANG".to_string(), OsString::from("C.UTF-8")),
        ]);
        env.extend(
            extra
                .iter()
                .map(|(key, value)| (key.clone(), OsString::from(value))),
        );
        env
    }

    /// Removes the directory now (blocking), logging what could not be removed.
    pub fn remove(self) {
        drop(self);
    }

    fn write(&self, (file, relative): (&JobFile, &Path)) -> Result<(), BackendError> {
        let mut dir = self.path().to_path_buf();
        if let Some(parent) = relative.parent() {
            for component in parent.components() {
                dir.push(component);
                self.ensure_dir(&dir)?;
            }
        }
        let target = self.path().join(relative);
        let fail = |error| {
            io_error(
                &target,
                "writing a request file",
                error,
                "check disk space under work_root",
            )
        };
        // O_NOFOLLOW: never write through a symlink, whatever ended up in the directory.
        let mut handle = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&target)
            .map_err(fail)?;
        handle.write_all(&file.content).map_err(fail)?;
        drop(handle);
        self.own(&target)?;
        // No setuid, setgid or sticky bits from a request.
        fs::set_permissions(&target, Permissions::from_mode(file.mode & 0o777)).map_err(fail)
    }

    /// `dir` exists once an earlier file needed it; the paths were checked (`check_files`),
    /// so nothing but a directory can be there.
    fn ensure_dir(&self, dir: &Path) -> Result<(), BackendError> {
        match fs::symlink_metadata(dir) {
            Ok(_) => Ok(()),
            Err(_) => self.make_dir(dir),
        }
    }

    fn make_dir(&self, dir: &Path) -> Result<(), BackendError> {
        DirBuilder::new().mode(0o755).create(dir).map_err(|error| {
            io_error(
                dir,
                "creating a directory",
                error,
                "check disk space under work_root",
            )
        })?;
        self.own(dir)
    }

    fn own(&self, path: &Path) -> Result<(), BackendError> {
        let Some((uid, gid)) = self.owner else {
            return Ok(());
        };
        chown(path, Some(uid.as_raw()), Some(gid.as_raw())).map_err(|error| {
            io_error(
                path,
                "handing a file to the job's user",
                error,
                "the worker must run as root to switch users",
            )
        })
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        // An empty directory (a job that wrote nothing) goes in one rmdir, which removes
        // neither a symlink nor anything in a directory. Else a walk that never follows a
        // link, whatever a process of the job still does to the tree (see `remove`).
        if fs::remove_dir(&self.path).is_ok() {
            return;
        }
        if let Err(error) = remove_tree(&self.path) {
            tracing::warn!(
                path = %self.path.display(),
                "could not remove a job's working directory: {error}; remove it by hand"
            );
        }
    }
}

fn io_error(path: &Path, doing: &str, error: io::Error, advice: &str) -> BackendError {
    BackendError::new(
        ErrorKind::SandboxStartFailed,
        KIND,
        path.display().to_string(),
        format!("{doing} failed: {error}; {advice}"),
    )
}

/// Each file's path inside the working directory, once the files were checked to fit together.
fn check_files(files: &[JobFile]) -> Result<Vec<&Path>, BackendError> {
    JobFile::check_all(files, KIND)?;
    Ok(files
        .iter()
        .map(|file| Path::new(file.path.as_str()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_land_with_their_content_and_mode_and_the_dir_goes_away() {
        let root = tempfile::tempdir().unwrap();
        let files = [
            JobFile {
                path: "a/b/data.bin".parse().unwrap(),
                content: vec![0, 159, 255],
                mode: 0o4755,
            },
            JobFile {
                path: "a/b".parse().unwrap(),
                content: vec![],
                mode: 0o644,
            },
        ];
        assert!(Workdir::create(root.path(), None, &files).is_err());
        let workdir = Workdir::create(root.path(), None, &files[..1]).unwrap();
        let written = workdir.path().join("a/b/data.bin");
        assert_eq!(fs::read(&written).unwrap(), vec![0, 159, 255]);
        assert_eq!(
            fs::metadata(&written).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        let path = workdir.path().to_path_buf();
        workdir.remove();
        assert!(!path.exists());
    }

    #[test]
    fn large_requests_are_not_small_and_dropping_removes() {
        let file = |size: usize| JobFile {
            path: "f".parse().unwrap(),
            content: vec![0; size],
            mode: 0o644,
        };
        assert!(Workdir::is_small(&[file(10)]));
        assert!(!Workdir::is_small(&[file(INLINE_BYTES + 1)]));
        assert!(!Workdir::is_small(&vec![file(1); INLINE_FILES + 1]));
        let root = tempfile::tempdir().unwrap();
        let workdir = Workdir::create(root.path(), None, &[]).unwrap();
        fs::create_dir(workdir.path().join("made-by-the-job")).unwrap();
        fs::write(workdir.path().join("made-by-the-job/left-behind"), b"").unwrap();
        let path = workdir.path().to_path_buf();
        drop(workdir);
        assert!(!path.exists(), "dropping a workdir removes it");
    }
}
