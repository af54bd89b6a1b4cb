//! Reading the files a request's `outputs` asked for out of a finished job's working
//! directory: one [`Collector`] applies the patterns and the caps for every backend, whatever
//! it reads from (a host directory with [`collect_dir`], a tar stream of a container's
//! directory), so all backends return the same files for the same job.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use openshell_protocol::outputs::MAX_SKIPPED_LISTED;
use openshell_protocol::{
    FilesStatus, OutputMatcher, OutputPattern, RelativePath, SkipReason, SkippedFile,
};

/// What a job asked to get back, with the worker's caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesRequest {
    /// The request's patterns.
    pub patterns: Vec<OutputPattern>,
    /// Most files returned.
    pub max_files: u64,
    /// Most bytes returned, all files together.
    pub max_bytes: u64,
}

/// One file read out of the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedFile {
    /// Path inside the working directory.
    pub path: RelativePath,
    /// Contents.
    pub content: Vec<u8>,
}

/// The files read for a job, and the matches left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedFiles {
    /// Whether every match was read.
    pub status: FilesStatus,
    /// The files, by path.
    pub files: Vec<CollectedFile>,
    /// Matches left out (at most [`MAX_SKIPPED_LISTED`]).
    pub skipped: Vec<SkippedFile>,
    /// How many matches were left out in all.
    pub skipped_count: u64,
}

/// What an entry of the working directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory: walked, never returned.
    Directory,
    /// A symbolic link: never followed.
    Symlink,
    /// Anything else (device, fifo, socket, hard link entry of a tar).
    Other,
}

/// Applies a [`FilesRequest`] to the entries of a working directory, in the order a backend
/// reads them: [`Collector::offer`] each entry, read the ones it accepts, [`Collector::add`]
/// their contents.
#[derive(Debug)]
pub struct Collector {
    matcher: OutputMatcher,
    max_files: u64,
    max_bytes: u64,
    bytes: u64,
    status: FilesStatus,
    files: Vec<CollectedFile>,
    skipped: Vec<SkippedFile>,
    skipped_count: u64,
}

impl Collector {
    /// A collector for `request`.
    pub fn new(request: &FilesRequest) -> Self {
        Self {
            matcher: OutputMatcher::new(&request.patterns),
            max_files: request.max_files,
            max_bytes: request.max_bytes,
            bytes: 0,
            status: FilesStatus::Complete,
            files: Vec::new(),
            skipped: Vec::new(),
            skipped_count: 0,
        }
    }

    /// Whether to read the entry at `path` (relative to the working directory) of `kind` and
    /// `size`: true for a matching regular file within the caps, whose bytes the caller then
    /// reads (at most `size`) and hands to [`Collector::add`]. Matches it refuses are recorded
    /// as skipped, with the reason.
    pub fn offer(&mut self, path: &str, kind: EntryKind, size: u64) -> bool {
        let Ok(path) = RelativePath::parse(path) else {
            return false;
        };
        if kind == EntryKind::Directory || !self.matcher.matches(path.as_str()) {
            return false;
        }
        let refusal = match kind {
            EntryKind::Symlink => Some(SkipReason::Symlink),
            EntryKind::Other | EntryKind::Directory => Some(SkipReason::NotRegularFile),
            EntryKind::File if self.files.len() as u64 >= self.max_files => {
                self.cap_hit(FilesStatus::TooManyFiles);
                Some(SkipReason::CountCap)
            }
            EntryKind::File if self.bytes.saturating_add(size) > self.max_bytes => {
                self.cap_hit(FilesStatus::TooLarge);
                Some(SkipReason::SizeCap)
            }
            EntryKind::File => None,
        };
        match refusal {
            Some(reason) => {
                self.skip(path, reason);
                false
            }
            None => {
                self.bytes += size;
                true
            }
        }
    }

    /// The contents of an entry [`Collector::offer`] accepted.
    pub fn add(&mut self, path: &str, content: Vec<u8>) {
        if let Ok(path) = RelativePath::parse(path) {
            self.files.push(CollectedFile { path, content });
        }
    }

    /// What was collected, files sorted by path.
    pub fn finish(mut self) -> CollectedFiles {
        self.files.sort_by(|a, b| a.path.cmp(&b.path));
        CollectedFiles {
            status: self.status,
            files: self.files,
            skipped: self.skipped,
            skipped_count: self.skipped_count,
        }
    }

    fn cap_hit(&mut self, status: FilesStatus) {
        if self.status == FilesStatus::Complete {
            self.status = status;
        }
    }

    fn skip(&mut self, path: RelativePath, reason: SkipReason) {
        self.skipped_count += 1;
        if self.skipped.len() < MAX_SKIPPED_LISTED {
            self.skipped.push(SkippedFile { path, reason });
        }
    }
}

/// Collects `request` from the host directory `root`, the working directory of a job whose
/// processes are all gone. Never follows a symlink: entries are examined with `lstat`, files
/// opened with `O_NOFOLLOW` and checked to be the entry examined, directories entered only
/// when they are directories. Entries are visited in name order.
pub fn collect_dir(root: &Path, request: &FilesRequest) -> io::Result<CollectedFiles> {
    let mut collector = Collector::new(request);
    walk(root, "", &mut collector)?;
    Ok(collector.finish())
}

fn walk(dir: &Path, prefix: &str, collector: &mut Collector) -> io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let relative = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        let metadata = std::fs::symlink_metadata(&path)?;
        let kind = kind_of(&metadata.file_type());
        if kind == EntryKind::Directory {
            // A directory the worker cannot read holds nothing it can return.
            if let Err(error) = walk(&path, &relative, collector) {
                tracing::debug!(%error, path = %relative, "output directory not readable");
            }
        } else if collector.offer(&relative, kind, metadata.len()) {
            match read_exactly(&path, &metadata) {
                Some(content) => collector.add(&relative, content),
                None => collector.skip_changed(&relative, metadata.len()),
            }
        }
    }
    Ok(())
}

impl Collector {
    /// An accepted file that was no longer the file offered when it was read.
    fn skip_changed(&mut self, path: &str, size: u64) {
        self.bytes = self.bytes.saturating_sub(size);
        if let Ok(path) = RelativePath::parse(path) {
            self.skip(path, SkipReason::NotRegularFile);
        }
    }
}

fn kind_of(file_type: &std::fs::FileType) -> EntryKind {
    if file_type.is_symlink() {
        EntryKind::Symlink
    } else if file_type.is_dir() {
        EntryKind::Directory
    } else if file_type.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

/// The file at `path` if it is still the regular file `expected` describes, read in full.
fn read_exactly(path: &Path, expected: &std::fs::Metadata) -> Option<Vec<u8>> {
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(nix_flags())
        .open(path)
        .ok()?;
    let metadata = file.metadata().ok()?;
    if !metadata.is_file() || metadata.ino() != expected.ino() || metadata.dev() != expected.dev() {
        return None;
    }
    let mut content = Vec::with_capacity(expected.len() as usize);
    file.take(expected.len()).read_to_end(&mut content).ok()?;
    (content.len() as u64 == expected.len()).then_some(content)
}

fn nix_flags() -> i32 {
    nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn request(patterns: &[&str], max_files: u64, max_bytes: u64) -> FilesRequest {
        FilesRequest {
            patterns: patterns
                .iter()
                .map(|p| OutputPattern::parse(p).unwrap())
                .collect(),
            max_files,
            max_bytes,
        }
    }

    #[test]
    fn matching_regular_files_come_back_and_links_and_other_files_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("out/sub")).unwrap();
        std::fs::write(root.join("out/a.png"), b"png").unwrap();
        std::fs::write(root.join("out/sub/b.png"), b"deep").unwrap();
        std::fs::write(root.join("report.csv"), b"x,y").unwrap();
        std::fs::write(root.join("other.txt"), b"no").unwrap();
        symlink("/etc/passwd", root.join("out/passwd.png")).unwrap();
        symlink("/etc", root.join("out/etc")).unwrap();
        let collected = collect_dir(
            root,
            &request(&["out/**/*.png", "report.csv", "out/etc/*"], 10, 1000),
        )
        .unwrap();
        let paths: Vec<_> = collected.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["out/a.png", "out/sub/b.png", "report.csv"]);
        assert_eq!(collected.files[0].content, b"png");
        assert_eq!(collected.status, FilesStatus::Complete);
        assert_eq!(
            collected.skipped,
            [SkippedFile {
                path: RelativePath::parse("out/passwd.png").unwrap(),
                reason: SkipReason::Symlink
            }]
        );
    }

    #[test]
    fn caps_on_count_and_bytes_skip_the_rest_and_say_which_cap() {
        let dir = tempfile::tempdir().unwrap();
        for (name, size) in [("a", 10), ("b", 10), ("c", 10)] {
            std::fs::write(dir.path().join(name), vec![b'x'; size]).unwrap();
        }
        let counted = collect_dir(dir.path(), &request(&["*"], 2, 1000)).unwrap();
        assert_eq!(counted.files.len(), 2);
        assert_eq!(counted.status, FilesStatus::TooManyFiles);
        assert_eq!(counted.skipped[0].reason, SkipReason::CountCap);
        let sized = collect_dir(dir.path(), &request(&["*"], 10, 25)).unwrap();
        assert_eq!(sized.files.len(), 2);
        assert_eq!(sized.status, FilesStatus::TooLarge);
        assert_eq!(sized.skipped_count, 1);
    }
}
