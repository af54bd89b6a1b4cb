//! Cases for returned files (`Job::outputs`), run where the backend lists
//! [`LimitName::Files`] among its capabilities: the matching regular files come back with
//! their exact bytes, links and everything outside the working directory never do, even when
//! the job races the collection, and the caps hold.

use openshell_protocol::{
    EnforcementStatus, FilesStatus, LimitName, OutputPattern, RelativePath, SkipReason,
};

use crate::files::FilesRequest;
use crate::{Backend, Job};

use super::{assert_exited, code_job, hostile_limits, run};

/// Whether `backend` returns files; cases say what they skip otherwise.
fn returns_files(backend: &dyn Backend) -> bool {
    let returns = backend
        .capabilities()
        .get(&LimitName::Files)
        .is_some_and(|entry| entry.status != EnforcementStatus::NotEnforced);
    if !returns {
        eprintln!(
            "{} does not return files (no `files` capability): case skipped",
            backend.kind()
        );
    }
    returns
}

fn asking(mut job: Job, patterns: &[&str], max_files: u64, max_bytes: u64) -> Job {
    job.outputs = Some(FilesRequest {
        patterns: patterns
            .iter()
            .map(|pattern| OutputPattern::parse(pattern).expect("a valid pattern"))
            .collect(),
        max_files,
        max_bytes,
    });
    job
}

fn path(text: &str) -> RelativePath {
    RelativePath::parse(text).expect("a relative path")
}

/// The regular files matching the patterns come back with their exact bytes, sorted by path;
/// a matching symlink is skipped as one, a file no pattern names is not mentioned.
pub async fn files_back_are_the_matching_regular_files(backend: &dyn Backend) {
    if !returns_files(backend) {
        return;
    }
    let code = "mkdir -p out/sub\n\
                printf alpha > out/a.txt\n\
                awk 'BEGIN { for (i = 0; i < 256; i++) printf \"%c\", i }' > out/sub/b.bin\n\
                ln -s /etc/passwd out/link.txt\n\
                printf no > other.txt\n";
    let job = asking(
        code_job("sh", code, &[]),
        &["out/**/*.txt", "out/**/*.bin"],
        16,
        1 << 20,
    );
    let run = run(backend, job).await;
    assert_exited(&run, 0);
    let files = run.execution.files.as_ref().expect("files were collected");
    let paths: Vec<_> = files.files.iter().map(|file| file.path.as_str()).collect();
    assert_eq!(paths, ["out/a.txt", "out/sub/b.bin"], "{files:?}");
    assert_eq!(files.files[0].content, b"alpha");
    assert_eq!(files.files[1].content.len(), 256, "binary bytes kept");
    assert!(
        files.files[1]
            .content
            .iter()
            .enumerate()
            .all(|(i, byte)| usize::from(*byte) == i),
        "binary bytes exact"
    );
    assert_eq!(files.status, FilesStatus::Complete);
    assert_eq!(files.skipped.len(), 1, "{files:?}");
    assert_eq!(files.skipped[0].path, path("out/link.txt"));
    assert_eq!(files.skipped[0].reason, SkipReason::Symlink);
}

/// More matches than `max_files`, or more bytes than `max_bytes`, are skipped with the cap's
/// reason and status.
pub async fn files_back_respect_the_caps(backend: &dyn Backend) {
    if !returns_files(backend) {
        return;
    }
    let code = "for i in 1 2 3 4 5; do head -c 1000 /dev/zero > f$i.dat; done";
    let counted = run(
        backend,
        asking(code_job("sh", code, &[]), &["*.dat"], 3, 1 << 20),
    )
    .await;
    let files = counted.execution.files.expect("files were collected");
    assert_eq!(files.files.len(), 3);
    assert_eq!(files.status, FilesStatus::TooManyFiles);
    assert_eq!(files.skipped_count, 2);
    assert!(
        files
            .skipped
            .iter()
            .all(|s| s.reason == SkipReason::CountCap)
    );
    let sized = run(
        backend,
        asking(code_job("sh", code, &[]), &["*.dat"], 16, 2500),
    )
    .await;
    let files = sized.execution.files.expect("files were collected");
    assert_eq!(files.files.len(), 2);
    assert_eq!(files.status, FilesStatus::TooLarge);
    assert!(
        files
            .skipped
            .iter()
            .all(|s| s.reason == SkipReason::SizeCap)
    );
}

/// A hostile job cannot make the collection read outside its working directory: a directory
/// symlinked to `/etc`, a file symlinked to `/etc/passwd`, a hard link attempt, and a process
/// left behind that keeps swapping a file for a symlink to `/etc/passwd` after the job ends.
/// Whatever comes back, no byte of it is the host's (or the image's) `/etc/passwd`.
pub async fn files_back_never_leave_the_working_directory(backend: &dyn Backend) {
    if !returns_files(backend) {
        return;
    }
    let code = "ln -s /etc out\n\
                ln -s /etc/passwd data.txt\n\
                ln /etc/passwd hard.txt 2>/dev/null || true\n\
                printf mine > race.txt\n\
                ( while :; do ln -sf /etc/passwd race.tmp; mv -f race.tmp race.txt; \
                  printf mine > race.tmp; mv -f race.tmp race.txt; done ) >/dev/null 2>&1 &\n\
                sleep 0.3\n";
    let mut job = asking(
        code_job("sh", code, &[]),
        &["out/*", "data.txt", "hard.txt", "race.txt"],
        16,
        1 << 20,
    );
    job.limits = hostile_limits();
    let run = run(backend, job).await;
    let Some(files) = run.execution.files.as_ref() else {
        // Not collected is safe; but a job that exited should have been collected.
        panic!("files were not collected: {run:?}");
    };
    for file in &files.files {
        let text = String::from_utf8_lossy(&file.content);
        assert!(
            !text.contains("root:"),
            "`{}` came back with /etc/passwd's contents",
            file.path
        );
        assert!(
            ["race.txt", "hard.txt"].contains(&file.path.as_str()),
            "unexpected {}",
            file.path
        );
    }
    let skipped: Vec<_> = files.skipped.iter().map(|s| s.path.as_str()).collect();
    assert!(skipped.contains(&"data.txt"), "{files:?}");
    assert!(
        !files
            .files
            .iter()
            .any(|file| file.path.as_str().starts_with("out/")),
        "nothing under a symlinked directory: {files:?}"
    );
}
