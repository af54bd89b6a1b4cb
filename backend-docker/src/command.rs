//! What one exec runs: a small `sh` prologue that lowers the job's rlimits and unpacks the
//! request's files from the head of stdin, then `exec`s the job's argv with the rest of stdin.
//!
//! Why not the archive API: Docker refuses `PUT /containers/{id}/archive` on a read-only root
//! filesystem, and (engine 20.10) writes under, not into, tmpfs mounts. Streaming the tar
//! through the exec's own stdin costs no extra round trip: `head -c` reads exactly the
//! archive's bytes, so the job's stdin follows untouched.

use std::collections::BTreeMap;
use std::path::Path;

use openshell_protocol::{ErrorKind, Limits};

use super::error;
use super::settings::DockerSettings;
use openshell_backend::{BackendError, EgressEndpoint, Job, JobFile};

/// Exit code of the prologue when it cannot prepare the job (its message is on stderr).
pub(super) const PROLOGUE_FAILED: i64 = 125;

/// The exec that runs a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Command {
    /// The exec's argv: `sh -c PROLOGUE openshell ARGV...`.
    pub cmd: Vec<String>,
    /// The exec's environment, `KEY=value`.
    pub env: Vec<String>,
    /// Bytes sent on stdin before the job's own: the tar of the request's files.
    pub prologue_input: Vec<u8>,
}

/// The exec for `job` in a container made from `settings`, owned by `uid:gid`.
pub(super) fn command(
    job: &Job,
    settings: &DockerSettings,
    owner: (u32, u32),
) -> Result<Command, BackendError> {
    if job.argv.is_empty() {
        return Err(invalid("argv", "the job has no program to run"));
    }
    job.check_files(error::KIND)?;
    let archive = archive(&job.files, owner)?;
    let mut cmd = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        prologue(&job.limits, &settings.workdir, archive.len()),
        "openshell".to_string(),
    ];
    match &job.egress {
        // The forwarder starts first, then runs the argv (see `openshell_backend::egress`).
        Some(_) => cmd.extend(EgressEndpoint::wrap(&job.argv)),
        None => cmd.extend(job.argv.iter().cloned()),
    }
    Ok(Command {
        cmd,
        env: environment(&job.env, settings)?,
        prologue_input: archive,
    })
}

/// The `sh` script run before the job: rlimits, then the files, then `exec "$@"`.
pub(super) fn prologue(limits: &Limits, workdir: &str, archive_bytes: usize) -> String {
    let mut script = String::from("fail() { printf 'openshell: %s\\n' \"$1\" >&2; exit 125; }\n");
    let mut limit = |flag: &str, value: u64, name: &str| {
        script.push_str(&format!(
            "ulimit -{flag} {value} || fail 'cannot set the {name} limit ({value})'\n"
        ));
    };
    if let Some(open_files) = limits.open_files {
        limit("n", open_files, "open_files");
    }
    if let Some(disk) = limits.disk {
        // POSIX `ulimit -f` counts 512-byte blocks.
        limit("f", disk.bytes().div_ceil(512).max(1), "disk (file size)");
    }
    if let Some(cpu) = limits.cpu_time {
        limit("t", cpu.millis().div_ceil(1000).max(1), "cpu_time");
    }
    if archive_bytes > 0 {
        script.push_str(&format!(
            "head -c {archive_bytes} | tar -x -m -p -f - -C {} || fail \"the request's files could not be \
             written to the working directory (do they fit in the disk limit?)\"\n",
            quote(workdir)
        ));
    }
    script.push_str("exec \"$@\"\n");
    script
}

/// `text` as one single-quoted shell word.
pub(super) fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A minimal base environment with the job's variables on top.
fn environment(
    extra: &BTreeMap<String, String>,
    settings: &DockerSettings,
) -> Result<Vec<String>, BackendError> {
    let mut env = BTreeMap::from([
        ("PATH".to_string(), settings.path.clone()),
        ("HOME".to_string(), settings.workdir.clone()),
        ("TMPDIR".to_string(), "/tmp".to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
    ]);
    for (key, value) in extra {
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            return Err(invalid(
                key,
                &format!("environment variable `{key}` has an empty name, `=` or a NUL byte"),
            ));
        }
        env.insert(key.clone(), value.clone());
    }
    Ok(env
        .into_iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect())
}

/// A tar of `files` owned by `owner`, with their directories; empty when there are none.
pub(super) fn archive(files: &[JobFile], (uid, gid): (u32, u32)) -> Result<Vec<u8>, BackendError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    // Paths are relative and inside the directory by construction, and `Job::check_files`
    // refused conflicts: tar would otherwise fail in the container, or let a later entry
    // replace an earlier one.
    let paths: Vec<&Path> = files
        .iter()
        .map(|file| Path::new(file.path.as_str()))
        .collect();
    let mut builder = tar::Builder::new(Vec::new());
    let mut directories = Vec::new();
    for (file, path) in files.iter().zip(paths) {
        for parent in path.ancestors().skip(1) {
            if !parent.as_os_str().is_empty() && !directories.iter().any(|dir| dir == parent) {
                directories.push(parent.to_path_buf());
            }
        }
        let mut header = header(tar::EntryType::Regular, file.mode & 0o777, (uid, gid));
        header.set_size(file.content.len() as u64);
        builder
            .append_data(&mut header, path, file.content.as_slice())
            .map_err(|failure| {
                invalid(file.path.as_str(), &format!("cannot archive it: {failure}"))
            })?;
    }
    // Directories first would be tidier, but tar creates missing parents as it goes; these
    // entries only give them the right owner and mode.
    directories.sort();
    for dir in directories {
        let mut header = header(tar::EntryType::Directory, 0o755, (uid, gid));
        header.set_size(0);
        builder
            .append_data(&mut header, &dir, std::io::empty())
            .map_err(|failure| invalid(&dir.display().to_string(), &failure.to_string()))?;
    }
    builder
        .into_inner()
        .map_err(|failure| invalid("files", &format!("cannot finish the archive: {failure}")))
}

fn header(kind: tar::EntryType, mode: u32, (uid, gid): (u32, u32)) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(uid.into());
    header.set_gid(gid.into());
    header.set_mtime(0);
    header
}

fn invalid(where_: &str, message: &str) -> BackendError {
    error::error(ErrorKind::InvalidRequest, where_, message)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use openshell_protocol::{ByteSize, DurationMs};

    use super::*;

    fn file(path: &str, content: &[u8], mode: u32) -> JobFile {
        JobFile {
            path: path.parse().expect("a relative path"),
            content: content.to_vec(),
            mode,
        }
    }

    #[test]
    fn the_prologue_lowers_rlimits_unpacks_files_then_execs() {
        let limits = Limits {
            open_files: Some(64),
            disk: Some(ByteSize::kib(1025)),
            cpu_time: Some(DurationMs(1500)),
            ..Limits::default()
        };
        let script = prologue(&limits, "/work space", 2048);
        assert!(script.contains("ulimit -n 64 ||"), "{script}");
        assert!(script.contains("ulimit -f 2050 ||"), "{script}");
        assert!(script.contains("ulimit -t 2 ||"), "{script}");
        assert!(script.contains("head -c 2048 | tar -x -m -p -f - -C '/work space' ||"));
        assert!(script.ends_with("exec \"$@\"\n"));
        let bare = prologue(&Limits::default(), "/workspace", 0);
        assert!(!bare.contains("ulimit") && !bare.contains("tar"), "{bare}");
    }

    #[test]
    fn the_command_passes_argv_as_positional_parameters() {
        let job = Job {
            id: "j".into(),
            tenant: "t".into(),
            language: None,
            argv: vec!["echo".into(), "$HOME; rm -rf /".into()],
            stdin: Default::default(),
            env: BTreeMap::from([("PATH".into(), "/mine".into()), ("A".into(), "b=c".into())]),
            files: vec![],
            limits: Limits::default(),
            network: false,
            egress: None,
            outputs: None,
        };
        let command = command(&job, &DockerSettings::default(), (1000, 1000)).unwrap();
        assert_eq!(command.cmd[..2], ["/bin/sh", "-c"]);
        assert_eq!(command.cmd[3..], ["openshell", "echo", "$HOME; rm -rf /"]);
        assert!(command.env.contains(&"PATH=/mine".to_string()));
        assert!(command.env.contains(&"A=b=c".to_string()));
        assert!(command.env.contains(&"HOME=/workspace".to_string()));
        assert!(command.prologue_input.is_empty());
        let bad_env = Job {
            env: BTreeMap::from([("A=B".into(), "x".into())]),
            ..job.clone()
        };
        assert!(command_err(&bad_env));
        let no_argv = Job {
            argv: vec![],
            ..job
        };
        assert!(command_err(&no_argv));
    }

    fn command_err(job: &Job) -> bool {
        command(job, &DockerSettings::default(), (1000, 1000))
            .is_err_and(|error| error.kind == ErrorKind::InvalidRequest)
    }

    #[test]
    fn the_archive_holds_owned_files_with_safe_modes_and_their_directories() {
        let files = [
            file("a/b/data.bin", &[0, 159, 255], 0o4755),
            file("main.py", b"print(1)", 0o644),
        ];
        let bytes = archive(&files, (1000, 1001)).unwrap();
        let mut tar = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (1000, 1001));
            let path = entry.path().unwrap().display().to_string();
            seen.push((path, header.mode().unwrap(), content));
        }
        assert_eq!(seen[0], ("a/b/data.bin".into(), 0o755, vec![0, 159, 255]));
        assert_eq!(seen[1], ("main.py".into(), 0o644, b"print(1)".to_vec()));
        assert_eq!(seen[2].0, "a");
        assert_eq!(seen[3].0, "a/b");
        assert!(archive(&[], (1, 1)).unwrap().is_empty());
    }
}
