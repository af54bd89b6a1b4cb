//! The local backend as a sandbox: each job in bubblewrap, in its own pid, mount, ipc, uts and
//! network namespaces, killed whole when it ends.
//!
//! bubblewrap runs as root (the worker is root) without a user namespace: the job gets none,
//! and a seccomp filter ([`seccomp`]) keeps it from making one (or using kernel keyrings, which
//! outlive it). Inside, a small perl program (`sandbox/init.pl`, run from perl-base) is pid 1:
//! it forks the job's own process, which drops to the job's user for good, sets the rlimits
//! and execs the program. When that process ends, pid 1 writes its wait status to a pipe and
//! exits, and the kernel kills everything left in the namespace: a double-forked `setsid`
//! survivor dies with it, and nothing a descendant holds open decides the verdict (bubblewrap
//! itself reports a signal only as 128 + N, which is why pid 1 is ours). If the worker kills
//! bubblewrap (timeout, cancel, output limit), `--die-with-parent` takes pid 1 down, and the
//! namespace with it.
//!
//! The job sees the host's /usr and /etc read-only (and the /bin, /lib, ... links or binds
//! into them), its own /proc, a minimal /dev, fresh tmpfs on /tmp, /var/tmp and /dev/shm
//! (each of the disk limit's size, when set), and its working directory, bound at the same
//! path as on the host. Without `network`, its network namespace has only a loopback
//! interface. Its environment and argv come to pid 1 on a memfd, never on a command line the
//! host's users could read.

mod enter;
mod seccomp;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::fcntl::OFlag;
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::unistd::{Uid, pipe2};
use openshell_protocol::ErrorKind;
use serde::{Deserialize, Serialize};

use super::KIND;
use super::rlimits::Rlimit;
use super::user::RunAs;
use openshell_backend::EgressEndpoint;
use openshell_backend::egress::{HOSTS, SANDBOX_DIR};
use openshell_backend::{BackendError, Job};

pub(super) use self::enter::NSENTER;

/// bubblewrap, where Debian's `bubblewrap` package installs it.
pub(super) const BWRAP: &str = "/usr/bin/bwrap";

/// The perl that runs each sandbox's pid 1 (perl-base, Essential on Debian).
pub(super) const PERL: &str = "/usr/bin/perl";

/// pid 1 of each sandbox.
const INIT: &str = include_str!("sandbox/init.pl");

/// The hostname jobs see.
const HOSTNAME: &str = "openshell";

/// PATH of bubblewrap and of pid 1 (the job gets its own).
const HELPER_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Top-level paths that are links into /usr on a merged-/usr system, else directories.
const USR_LINKS: [&str; 6] = ["/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"];

/// Private tmpfs mounts of every job (mode 1777, like the host's).
const PRIVATE_TMP: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];

/// `[pools.NAME.local] sandbox`: whether jobs run in a bubblewrap sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    /// When the worker is root and bubblewrap and perl are installed; else jobs run as plain
    /// processes, with a loud warning and `network` reported as not enforced. bubblewrap
    /// that is installed but fails its start-up trial stops the backend (fail closed).
    #[default]
    Auto,
    /// Always: the backend does not start without a working sandbox.
    Required,
    /// Never: jobs run as plain processes (development only; reported as such).
    Off,
}

/// A working bubblewrap sandbox, checked at start-up.
#[derive(Debug, Clone)]
pub(super) struct Sandbox {
    bwrap: PathBuf,
    perl: PathBuf,
}

/// What [`Sandbox::detect`] found.
#[derive(Debug)]
pub(super) enum Detected {
    /// Jobs run sandboxed.
    Sandbox(Sandbox),
    /// Jobs run as plain processes, for this reason.
    Unsandboxed(String),
}

/// One job's sandbox: the program to start (bubblewrap), its environment, the fds it gets as
/// 3, 4 and 5 (status pipe, job, seccomp filter), and the read end of the status pipe.
#[derive(Debug)]
pub(super) struct Launch {
    /// bubblewrap's argv.
    pub argv: Vec<String>,
    /// bubblewrap's environment (not the job's).
    pub env: BTreeMap<String, OsString>,
    /// Passed to bubblewrap as fds 3, 4 and 5.
    pub passed: Vec<OwnedFd>,
    /// Where pid 1 writes the job's own wait status.
    pub status: StatusPipe,
}

/// The read end of a sandbox's status pipe.
#[derive(Debug)]
pub(super) struct StatusPipe(File);

impl StatusPipe {
    /// The raw wait status of the job's own process, once its sandbox has ended; `None` when
    /// pid 1 never wrote one (the sandbox failed to start, or was killed first).
    pub fn read(mut self) -> Option<i32> {
        // Non-blocking: pid 1 wrote its one short line before it exited. A process of the
        // sandbox the kernel is still tearing down may hold the write end a moment longer, so
        // the read after the line can say "would block" instead of end of file: the line
        // counts all the same (reading it whole with read_to_string lost it, about one job
        // in 1,500 under load).
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 64];
        loop {
            match self.0.read(&mut chunk) {
                Ok(0) => break,
                Ok(read) => bytes.extend_from_slice(&chunk[..read]),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let text = String::from_utf8(bytes).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

impl Sandbox {
    /// Whether this worker's jobs can run sandboxed under `mode`.
    pub fn detect(mode: SandboxMode) -> Result<Detected, BackendError> {
        if mode == SandboxMode::Off {
            return Ok(Detected::Unsandboxed(
                "[pools.NAME.local] sandbox = \"off\"".to_string(),
            ));
        }
        let missing = if !Uid::effective().is_root() {
            Some(
                "the worker is not root (bubblewrap needs root to sandbox without user namespaces)",
            )
        } else if seccomp::program().is_none() {
            Some("this architecture has no seccomp filter (x86_64 and aarch64 only)")
        } else if !Path::new(BWRAP).exists() {
            Some(
                "bubblewrap is not installed (Debian package `bubblewrap`; deploy/setup.sh installs it)",
            )
        } else if !Path::new(PERL).exists() {
            Some("perl is not installed (Debian package `perl-base`)")
        } else {
            None
        };
        match (missing, mode) {
            (None, _) => {
                let sandbox = Self {
                    bwrap: PathBuf::from(BWRAP),
                    perl: PathBuf::from(PERL),
                };
                sandbox.trial()?;
                Ok(Detected::Sandbox(sandbox))
            }
            (Some(why), SandboxMode::Required) => Err(error(format!(
                "[pools.NAME.local] sandbox = \"required\", but {why}"
            ))),
            (Some(why), _) => Ok(Detected::Unsandboxed(why.to_string())),
        }
    }

    /// Runs `true` in a sandbox like a job's, once, so a host where bubblewrap cannot make
    /// its namespaces fails at start-up rather than on every job.
    fn trial(&self) -> Result<(), BackendError> {
        let dir = std::env::temp_dir();
        let mut args = self.namespaces(false, None);
        args.extend(["--chdir".to_string(), "/".to_string(), "--".to_string()]);
        args.push("/bin/true".to_string());
        let output = std::process::Command::new(&self.bwrap)
            .args(&args)
            .env_clear()
            .env("PATH", HELPER_PATH)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|failure| {
                error(format!(
                    "starting {} failed: {failure}",
                    self.bwrap.display()
                ))
            })?;
        if output.status.success() {
            return Ok(());
        }
        Err(error(format!(
            "bubblewrap is installed but cannot make a job's namespaces here ({}: {}); fix it, or set \
             [pools.NAME.local] sandbox = \"off\" to run jobs unsandboxed (development only)",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }

    /// bubblewrap's arguments for a job in `workdir` that runs as `run_as` under `rlimits`.
    pub fn launch(
        &self,
        job: &Job,
        workdir: &Path,
        run_as: &RunAs,
        rlimits: &[Rlimit],
        env: &BTreeMap<String, OsString>,
    ) -> io::Result<Launch> {
        // Non-blocking, and so are both ends: the final read must never wait, and pid 1
        // writes one short line into an empty pipe.
        let (status_read, status_write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let argv = match &job.egress {
            Some(_) => EgressEndpoint::wrap(&job.argv),
            None => job.argv.clone(),
        };
        let spec = memfd(c"openshell-job", &job_spec(&argv, env, rlimits, workdir)?)?;
        let filter = seccomp::program().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "no seccomp filter for this architecture",
            )
        })?;
        let filter = memfd(c"openshell-seccomp", &filter)?;
        let mut argv = vec![self.bwrap.display().to_string()];
        argv.extend(self.namespaces(job.network, job.limits.disk.map(|disk| disk.bytes())));
        if let Some(egress) = &job.egress {
            // No network but the egress proxy's socket, and the allowed names in /etc/hosts.
            let dir = egress.dir.display().to_string();
            let hosts = egress.dir.join(HOSTS).display().to_string();
            argv.extend(
                [
                    "--perms",
                    "0755",
                    "--dir",
                    "/run",
                    "--ro-bind",
                    &dir,
                    SANDBOX_DIR,
                    "--ro-bind",
                    &hosts,
                    "/etc/hosts",
                ]
                .map(String::from),
            );
        }
        // The working directory's parents exist in the sandbox only as bubblewrap makes them,
        // with the host's modes: a work root only root may enter would lock the job out.
        let parents: Vec<&Path> = workdir.ancestors().skip(1).collect();
        for parent in parents.into_iter().rev() {
            let shown = parent.display().to_string();
            let host_owned = ["/", "/usr", "/etc", "/proc"].contains(&shown.as_str())
                || ["/usr/", "/etc/", "/proc/"]
                    .iter()
                    .any(|top| shown.starts_with(top));
            if !host_owned {
                argv.extend(["--perms", "0755", "--dir", &shown].map(String::from));
            }
        }
        let workdir = workdir.display().to_string();
        // No --chdir: bubblewrap, without CAP_DAC_OVERRIDE by then, may not enter the job's
        // 0700 directory; the job's process does, once it is the job's user.
        argv.extend(["--bind", &workdir, &workdir, "--chdir", "/"].map(String::from));
        argv.extend(["--seccomp", "5", "--"].map(String::from));
        argv.push(self.perl.display().to_string());
        argv.extend(["-e", INIT, "--"].map(String::from));
        argv.push(run_as.uid.to_string());
        argv.push(run_as.gid.to_string());
        Ok(Launch {
            argv,
            env: BTreeMap::from([("PATH".to_string(), OsString::from(HELPER_PATH))]),
            passed: vec![status_write, spec, filter],
            status: StatusPipe(File::from(status_read)),
        })
    }

    /// The namespaces and mounts of every sandbox: all but the working directory.
    fn namespaces(&self, network: bool, tmp_bytes: Option<u64>) -> Vec<String> {
        let mut args: Vec<String> = [
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--as-pid-1",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            HOSTNAME,
            "--cap-drop",
            "ALL",
            "--cap-add",
            "CAP_SETUID",
            "--cap-add",
            "CAP_SETGID",
            "--ro-bind",
            "/usr",
            "/usr",
            "--ro-bind",
            "/etc",
            "/etc",
        ]
        .map(String::from)
        .to_vec();
        if !network {
            args.push("--unshare-net".to_string());
        }
        for top in USR_LINKS {
            match std::fs::read_link(top) {
                Ok(target) => {
                    args.extend([
                        "--symlink".to_string(),
                        target.display().to_string(),
                        top.to_string(),
                    ]);
                }
                Err(_) => args.extend(["--ro-bind-try", top, top].map(String::from)),
            }
        }
        if network {
            // /etc/resolv.conf is often a link into here.
            args.extend(
                [
                    "--ro-bind-try",
                    "/run/systemd/resolve",
                    "/run/systemd/resolve",
                ]
                .map(String::from),
            );
        }
        args.extend(["--proc", "/proc", "--dev", "/dev"].map(String::from));
        for dir in PRIVATE_TMP {
            if let Some(bytes) = tmp_bytes {
                args.extend(["--size".to_string(), bytes.to_string()]);
            }
            args.extend(["--perms", "1777", "--tmpfs", dir].map(String::from));
        }
        args
    }
}

/// The job for pid 1: NUL-separated `dir=`, `arg=`, `env=` and `rlimit=RESOURCE:SOFT:HARD`
/// records.
fn job_spec(
    argv: &[String],
    env: &BTreeMap<String, OsString>,
    rlimits: &[Rlimit],
    dir: &Path,
) -> io::Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let has_nul = argv.iter().any(|arg| arg.contains('\0'))
        || dir.as_os_str().as_bytes().contains(&0)
        || env
            .iter()
            .any(|(key, value)| key.contains('\0') || value.as_bytes().contains(&0));
    if has_nul {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an argument or environment variable contains a NUL byte",
        ));
    }
    let mut spec = Vec::new();
    spec.extend_from_slice(b"dir=");
    spec.extend_from_slice(dir.as_os_str().as_bytes());
    spec.push(0);
    for arg in argv {
        spec.extend_from_slice(b"arg=");
        spec.extend_from_slice(arg.as_bytes());
        spec.push(0);
    }
    for (key, value) in env {
        spec.extend_from_slice(b"env=");
        spec.extend_from_slice(key.as_bytes());
        spec.push(b'=');
        spec.extend_from_slice(value.as_bytes());
        spec.push(0);
    }
    for rlimit in rlimits {
        let raw = rlimit.raw();
        spec.extend_from_slice(
            format!(
                "rlimit={}:{}:{}\0",
                raw.resource, raw.limit.rlim_cur, raw.limit.rlim_max
            )
            .as_bytes(),
        );
    }
    Ok(spec)
}

/// A sealed-off in-memory file holding `bytes`, positioned at its start.
fn memfd(name: &std::ffi::CStr, bytes: &[u8]) -> io::Result<OwnedFd> {
    let mut file = File::from(memfd_create(name, MFdFlags::MFD_CLOEXEC)?);
    file.write_all(bytes)?;
    file.rewind()?;
    Ok(file.into())
}

fn error(message: String) -> BackendError {
    BackendError::new(ErrorKind::SandboxStartFailed, KIND, BWRAP, message)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn the_status_counts_while_a_dying_process_still_holds_the_write_end() {
        let (read, write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
        let mut writer = File::from(write);
        writer.write_all(b"256\n").unwrap();
        // A second holder of the write end: the read after the line would block.
        let _still_open = writer.try_clone().unwrap();
        assert_eq!(StatusPipe(File::from(read)).read(), Some(256));
        let (read, write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
        drop(write);
        assert_eq!(
            StatusPipe(File::from(read)).read(),
            None,
            "no status written"
        );
    }
}
