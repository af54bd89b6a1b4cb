//! Reading a finished job's `outputs` out of its container. The working directory is a tmpfs
//! inside the container's mount namespace, which the archive API cannot see (engine 20.10
//! archives the empty directory under it), so one more exec does it, as the job's own user:
//! it kills every process of the job first (all but the container's init and resident runner), so
//! nothing changes the files while they are read, then `tar` streams the directory out. The
//! worker reads that stream with the shared [`Collector`]: symlinks are entries, never
//! followed, and nothing outside the working directory is in the archive. The exec runs with
//! the job's own privileges in the job's own container, so even a hostile archive gives the
//! worker nothing the job could not have printed.

use std::io::Read;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures::StreamExt;
use openshell_backend::files::{Collector, EntryKind};
use openshell_backend::{CollectedFiles, FilesRequest};
use tokio_util::io::{StreamReader, SyncIoBridge};

/// How long reading the files may take before the job's files are reported not collected.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(60);

/// The script of the collecting exec: kill the job's processes (sparing pid 1 and the
/// resident runner, the lowest other pid, started with the container before the job), a bounded
/// number of rounds so that a fork bomb cannot hold it, then archive the working directory.
fn script(workdir: &str) -> String {
    format!(
        r#"keep=
for p in /proc/[0-9]*; do p=${{p#/proc/}}; [ "$p" = 1 ] && continue
  if [ -z "$keep" ] || [ "$p" -lt "$keep" ]; then keep=$p; fi; done
round=0
while [ $round -lt 50 ]; do
  alive=
  for p in /proc/[0-9]*; do p=${{p#/proc/}}
    case $p in 1|$$|$keep) continue;; esac
    kill -9 "$p" 2>/dev/null && alive=1
  done
  [ -z "$alive" ] && break
  round=$((round + 1))
done
exec tar --hard-dereference -C '{}' -cf - ."#,
        workdir.replace('\'', r"'\''")
    )
}

/// The files `request` asks for from `container`'s `workdir`, read as `user`; `None` when
/// they could not be read (the reason is logged).
pub(super) async fn collect(
    docker: &Docker,
    container: &str,
    user: &str,
    workdir: &str,
    request: &FilesRequest,
) -> Option<CollectedFiles> {
    match tokio::time::timeout(
        COLLECT_TIMEOUT,
        read(docker, container, user, workdir, request),
    )
    .await
    {
        Ok(Ok(files)) => Some(files),
        Ok(Err(message)) => {
            tracing::warn!(container, "the job's files could not be read: {message}");
            None
        }
        Err(_) => {
            tracing::warn!(
                container,
                "reading the job's files took over {COLLECT_TIMEOUT:?}"
            );
            None
        }
    }
}

async fn read(
    docker: &Docker,
    container: &str,
    user: &str,
    workdir: &str,
    request: &FilesRequest,
) -> Result<CollectedFiles, String> {
    let options = CreateExecOptions {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(vec!["/bin/sh".into(), "-c".into(), script(workdir)]),
        user: Some(user.to_string()),
        env: Some(vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()]),
        ..CreateExecOptions::default()
    };
    let exec = docker
        .create_exec(container, options)
        .await
        .map_err(|e| format!("creating the exec: {e}"))?
        .id;
    let started = docker
        .start_exec(&exec, Some(StartExecOptions::default()))
        .await
        .map_err(|e| format!("starting the exec: {e}"))?;
    let StartExecResults::Attached { output, .. } = started else {
        return Err("the engine started the exec detached".into());
    };
    let stdout = output.filter_map(|frame| async move {
        match frame {
            Ok(LogOutput::StdOut { message }) => Some(Ok(message)),
            Ok(LogOutput::StdErr { message }) => {
                tracing::debug!(stderr = %String::from_utf8_lossy(&message), "collecting files");
                None
            }
            Ok(_) => None,
            Err(error) => Some(Err(std::io::Error::other(error))),
        }
    });
    let reader = SyncIoBridge::new(StreamReader::new(Box::pin(stdout)));
    let request = request.clone();
    tokio::task::spawn_blocking(move || untar(reader, &request))
        .await
        .map_err(|e| format!("reading the archive: {e}"))?
}

/// Applies `request` to the tar archive on `reader`.
pub(super) fn untar(reader: impl Read, request: &FilesRequest) -> Result<CollectedFiles, String> {
    let mut collector = Collector::new(request);
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| format!("reading the archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("reading the archive: {e}"))?;
        let path = match entry.path() {
            Ok(path) => path.to_string_lossy().into_owned(),
            Err(_) => continue,
        };
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if path.is_empty() || path == "." {
            continue;
        }
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
            tar::EntryType::Directory => EntryKind::Directory,
            tar::EntryType::Symlink => EntryKind::Symlink,
            _ => EntryKind::Other,
        };
        let size = entry.size();
        if collector.offer(&path, kind, size) {
            let mut content = Vec::with_capacity(size as usize);
            entry
                .by_ref()
                .take(size)
                .read_to_end(&mut content)
                .map_err(|e| format!("reading `{path}` from the archive: {e}"))?;
            collector.add(&path, content);
        }
    }
    Ok(collector.finish())
}

#[cfg(test)]
mod tests {
    use openshell_protocol::{FilesStatus, OutputPattern, SkipReason};

    use super::*;

    #[test]
    fn an_archive_gives_its_matching_regular_files_and_never_a_link() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            builder.append_data(&mut header, path, data).unwrap();
        };
        add("./", tar::EntryType::Directory, b"", None);
        add("./out/", tar::EntryType::Directory, b"", None);
        add("./out/a.png", tar::EntryType::Regular, b"png", None);
        add(
            "./out/b.png",
            tar::EntryType::Symlink,
            b"",
            Some("/etc/shadow"),
        );
        add("./skip.txt", tar::EntryType::Regular, b"no", None);
        let archive = builder.into_inner().unwrap();
        let request = FilesRequest {
            patterns: vec![OutputPattern::parse("out/*").unwrap()],
            max_files: 10,
            max_bytes: 100,
        };
        let files = untar(archive.as_slice(), &request).unwrap();
        assert_eq!(files.status, FilesStatus::Complete);
        assert_eq!(files.files.len(), 1);
        assert_eq!(files.files[0].path, "out/a.png");
        assert_eq!(files.files[0].content, b"png");
        assert_eq!(files.skipped[0].reason, SkipReason::Symlink);
    }
}
