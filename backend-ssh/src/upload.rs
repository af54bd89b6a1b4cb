//! What goes down the channel's stdin before the job's own: the request headers, each file's
//! bytes, and the sentinel line; and the checks that keep paths, names and values expressible.

use std::collections::BTreeMap;

use super::KIND;
use super::error::SshError;
use super::request::{self, FileEntry, Plan};
use openshell_backend::JobFile;

/// The exec request and the bytes to send ahead of the job's stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The channel's exec command.
    pub command: String,
    /// Headers, file contents and sentinel.
    pub prefix: Vec<u8>,
    /// How many bytes at the start of `prefix` are the helper's request (the rest is the
    /// sandbox's stdin).
    pub request_len: usize,
    /// The sandbox's tmpfs sizes (disk, shm): the shape of a runner's waiting sandbox.
    pub shape: (u64, u64),
    /// The job needs network or egress, which only `sandbox run` gives.
    pub needs_run: bool,
    /// The line after which the sandbox sends the job's files, when it was asked for them.
    pub files_marker: Option<Vec<u8>>,
}

/// Builds the upload for `plan`, whose `files` describe `contents` in the same order, for the
/// sandbox helper at `helper`.
pub fn build(plan: &Plan, contents: &[&[u8]], helper: &str) -> Upload {
    let mut prefix = request::sandbox_request(plan);
    let request_len = prefix.len();
    prefix.extend_from_slice(&request::job_header(plan));
    prefix.reserve(contents.iter().map(|c| c.len()).sum::<usize>() + 32);
    for content in contents {
        prefix.extend_from_slice(content);
    }
    prefix.extend_from_slice(request::SENTINEL.as_bytes());
    prefix.push(b'\n');
    Upload {
        command: request::run_command(helper),
        prefix,
        request_len,
        shape: (plan.sandbox.disk, plan.sandbox.shm),
        needs_run: plan.sandbox.network || plan.sandbox.egress.is_some(),
        files_marker: plan.sandbox.files.as_ref().map(|files| files.marker()),
    }
}

/// The files to write, with their contents, once they were checked to fit together (no two
/// with one path, none where another needs a directory: [`JobFile::check_all`]).
pub fn files(files: &[JobFile]) -> Result<(Vec<FileEntry>, Vec<&[u8]>), SshError> {
    JobFile::check_all(files, KIND).map_err(|error| SshError::Invalid(error.message))?;
    let entries = files
        .iter()
        .map(|file| FileEntry {
            path: file.path.as_str().to_string(),
            len: file.content.len(),
            mode: file.mode,
        })
        .collect();
    let contents = files.iter().map(|file| file.content.as_slice()).collect();
    Ok((entries, contents))
}

/// Refuses an argv or environment the remote shell cannot carry exactly.
pub fn check_command(argv: &[String], env: &BTreeMap<String, String>) -> Result<(), SshError> {
    let Some(program) = argv.first() else {
        return Err(SshError::Invalid("the job has no program to run".into()));
    };
    if program.is_empty() || program.contains('=') {
        return Err(SshError::Invalid(format!(
            "program name `{}` cannot be run over SSH (empty, or contains `=`)",
            program.escape_debug()
        )));
    }
    if argv.iter().any(|arg| arg.contains('\0')) {
        return Err(SshError::Invalid("an argument contains a NUL byte".into()));
    }
    for (key, value) in env {
        let bad_key = key.is_empty() || key.contains(['=', '\0']);
        if bad_key || value.contains('\0') {
            return Err(SshError::Invalid(format!(
                "environment variable `{}` cannot be set (empty name, `=` in the name, or a NUL byte)",
                key.escape_debug()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &[u8]) -> JobFile {
        JobFile {
            path: path.parse().expect("a relative path"),
            content: content.to_vec(),
            mode: 0o644,
        }
    }

    #[test]
    fn files_that_collide_are_refused_as_on_every_backend() {
        assert!(files(&[file("a/b", b"x"), file("a/b/c", b"y")]).is_err());
        assert!(files(&[file("z", b"1"), file("z", b"2")]).is_err());
        let job_files = [file("a/b", b"22"), file("z", b"333")];
        let (entries, contents) = files(&job_files).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            ["a/b", "z"]
        );
        assert_eq!(contents, [b"22".as_slice(), b"333".as_slice()]);
    }

    #[test]
    fn commands_the_shell_cannot_carry_are_refused() {
        let env = BTreeMap::from([("A".to_string(), "x y 'z'".to_string())]);
        assert!(check_command(&["python3".into()], &env).is_ok());
        assert!(check_command(&[], &env).is_err());
        assert!(check_command(&["A=b".into()], &env).is_err());
        let bad = BTreeMap::from([("A=B".to_string(), String::new())]);
        assert!(check_command(&["true".into()], &bad).is_err());
    }
}
