//! Entering a session's held sandbox: `nsenter` into the namespaces of its pid 1, then the
//! sandbox's init (`init.pl`, in its `enter` mode) as the job's own process.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::unistd::Pid;

use super::super::rlimits::Rlimit;
use super::super::user::RunAs;
use super::{HELPER_PATH, INIT, Sandbox, job_spec, memfd, seccomp};
use openshell_backend::{Job, JobFile};

/// nsenter, from util-linux (Essential on Debian).
pub(in super::super) const NSENTER: &str = "/usr/bin/nsenter";

/// A job entering a held sandbox: the program to start (nsenter), its environment, and the
/// fds it gets as 3, 4 and 5 (the job's files, the job, the seccomp filter).
#[derive(Debug)]
pub(in super::super) struct Entry {
    /// nsenter's argv.
    pub argv: Vec<String>,
    /// nsenter's environment (not the job's).
    pub env: BTreeMap<String, OsString>,
    /// Passed to nsenter as fds 3, 4 and 5.
    pub passed: Vec<OwnedFd>,
}

impl Sandbox {
    /// nsenter's arguments for `job` in the sandbox whose pid 1 is `init` (a host pid), in
    /// `workdir`, as `run_as` under `rlimits`: the job runs in the sandbox's mount, uts, ipc,
    /// network, pid and cgroup namespaces, under the same seccomp filter as the sandbox.
    pub fn enter(
        &self,
        init: Pid,
        job: &Job,
        workdir: &Path,
        run_as: &RunAs,
        rlimits: &[Rlimit],
        env: &BTreeMap<String, OsString>,
    ) -> io::Result<Entry> {
        let files = memfd(c"openshell-files", &files_blob(&job.files))?;
        let spec = memfd(
            c"openshell-job",
            &job_spec(&job.argv, env, rlimits, workdir)?,
        )?;
        let filter = seccomp::program().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "no seccomp filter for this architecture",
            )
        })?;
        let filter = memfd(c"openshell-seccomp", &filter)?;
        let mut argv: Vec<String> = [
            NSENTER,
            "--target",
            &init.as_raw().to_string(),
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--pid",
            "--cgroup",
            "--root",
            "--",
        ]
        .map(String::from)
        .to_vec();
        argv.push(self.perl.display().to_string());
        argv.extend(["-e", INIT, "--"].map(String::from));
        argv.push(run_as.uid.to_string());
        argv.push(run_as.gid.to_string());
        argv.push("enter".to_string());
        Ok(Entry {
            argv,
            env: BTreeMap::from([("PATH".to_string(), OsString::from(HELPER_PATH))]),
            passed: vec![files, spec, filter],
        })
    }
}

/// The job's files for the init: `PATH\0MODE\0LENGTH\0` then the bytes, for each in turn.
fn files_blob(files: &[JobFile]) -> Vec<u8> {
    let mut blob = Vec::new();
    for file in files {
        blob.extend_from_slice(
            format!(
                "{}\0{}\0{}\0",
                file.path.as_str(),
                file.mode & 0o777,
                file.content.len()
            )
            .as_bytes(),
        );
        blob.extend_from_slice(&file.content);
    }
    blob
}
