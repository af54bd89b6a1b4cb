//! The raw operations OpenShell is compared with, run the same way in the same run.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::workload::Workload;

/// Which raw operation to compare with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaselineKind {
    /// fork/exec of the same program on this host.
    Exec,
    /// `docker run --rm` of the same program with the same image and limits.
    DockerRun,
    /// A fresh `ssh host cmd` per job.
    Ssh,
    /// `ssh host cmd` over an OpenSSH ControlMaster socket.
    SshMux,
    /// Core request/reply through the same workers (with `--durable`: durable ÷ core).
    Core,
    /// The same job through the same workers on another pool (`--baseline-pool`, default
    /// `none`, the local backend): a sandbox's cost over the job itself.
    Pool,
}

/// Where the raw operations go.
#[derive(Debug)]
pub struct Baseline {
    argv: Vec<String>,
    stdin: Vec<u8>,
    workdir: tempfile::TempDir,
    /// Jobs' environment for `exec` (as the local backend gives it); `None` keeps the bench's
    /// own, which the docker and ssh clients need.
    job_env: Option<Vec<(&'static str, std::ffi::OsString)>>,
    /// `ssh -O exit` for the ssh-mux master, so it does not outlive the run.
    stop_master: Option<Vec<String>>,
}

/// Options of the docker-run and ssh baselines.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BaselineTargets {
    /// Image for `--baseline docker-run` (env SANDBOX_DOCKER_IMAGE).
    #[arg(long, env = "SANDBOX_DOCKER_IMAGE", default_value = openshell_backend_docker::settings::DEFAULT_IMAGE)]
    pub docker_image: String,
    /// Memory limit given to `docker run` (as the pool's).
    #[arg(long, default_value = "512m")]
    pub docker_memory: String,
    /// user@host for `--baseline ssh|ssh-mux` (default SSH_USER@SSH_HOST).
    #[arg(long)]
    pub ssh_target: Option<String>,
    /// SSH port (env SSH_PORT).
    #[arg(long, env = "SSH_PORT", default_value_t = 22)]
    pub ssh_port: u16,
    /// SSH private key (env SSH_KEY_PATH).
    #[arg(long, env = "SSH_KEY_PATH")]
    pub ssh_key: Option<PathBuf>,
    /// known_hosts for the ssh baselines (env SSH_KNOWN_HOSTS).
    #[arg(long, env = "SSH_KNOWN_HOSTS")]
    pub ssh_known_hosts: Option<PathBuf>,
}

impl Baseline {
    /// Prepares `kind` for `workload`.
    pub fn new(
        kind: BaselineKind,
        workload: &Workload,
        targets: &BaselineTargets,
    ) -> anyhow::Result<Self> {
        let workdir = tempfile::tempdir()?;
        let job_env = (kind == BaselineKind::Exec).then(|| local_job_env(workdir.path()));
        let mut stop_master = None;
        let (argv, stdin) = match kind {
            BaselineKind::Exec => {
                let (argv, file) = workload.file_form();
                if let Some((path, content)) = file {
                    std::fs::write(workdir.path().join(path), content)?;
                }
                (argv, Vec::new())
            }
            BaselineKind::DockerRun => {
                let (program, stdin) = workload.stdin_form();
                let mut argv: Vec<String> = [
                    "docker",
                    "run",
                    "--rm",
                    "-i",
                    "--network",
                    "none",
                    "--memory",
                    &targets.docker_memory,
                ]
                .iter()
                .map(|part| part.to_string())
                .collect();
                argv.push(targets.docker_image.clone());
                argv.extend(program);
                (argv, stdin)
            }
            BaselineKind::Core | BaselineKind::Pool => {
                anyhow::bail!("--baseline core and pool run OpenShell jobs, not a raw operation")
            }
            BaselineKind::Ssh | BaselineKind::SshMux => {
                let (program, stdin) = workload.stdin_form();
                let ssh = ssh_argv(kind, targets, workdir.path())?;
                if kind == BaselineKind::SshMux {
                    let (target, options) =
                        ssh.split_last().expect("ssh argv ends with its target");
                    let mut stop = options.to_vec();
                    stop.extend(["-O".to_string(), "exit".to_string(), target.clone()]);
                    stop_master = Some(stop);
                }
                (ssh.into_iter().chain(program).collect(), stdin)
            }
        };
        Ok(Self {
            argv,
            stdin,
            workdir,
            job_env,
            stop_master,
        })
    }

    /// Runs one raw operation; its latency and `completed` or `exit_N`.
    pub async fn run_once(&self) -> anyhow::Result<(Duration, String)> {
        let started = Instant::now();
        let mut command = Command::new(&self.argv[0]);
        if let Some(env) = &self.job_env {
            command.env_clear().envs(env.iter().cloned());
        }
        let mut child = command
            .args(&self.argv[1..])
            .current_dir(self.workdir.path())
            .stdin(if self.stdin.is_empty() {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&self.stdin).await?;
        }
        let output = child.wait_with_output().await?;
        let latency = started.elapsed();
        let verdict = match output.status.code() {
            Some(0) => "completed".to_string(),
            Some(code) => format!("exit_{code}"),
            None => "signalled".to_string(),
        };
        Ok((latency, verdict))
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop_master {
            let _ = std::process::Command::new(&stop[0])
                .args(&stop[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The environment the local backend gives a job (its default PATH, HOME and TMPDIR in the
/// job's directory, LANG), so fork/exec finds the same programs (not, say, a pyenv shim).
fn local_job_env(dir: &std::path::Path) -> Vec<(&'static str, std::ffi::OsString)> {
    let path = openshell_backend_local::LocalSettings::default().path;
    vec![
        ("PATH", path.into()),
        ("HOME", dir.as_os_str().to_owned()),
        ("TMPDIR", dir.as_os_str().to_owned()),
        ("LANG", "C.UTF-8".into()),
    ]
}

fn ssh_argv(
    kind: BaselineKind,
    targets: &BaselineTargets,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<String>> {
    let target = match &targets.ssh_target {
        Some(target) => target.clone(),
        None => {
            let host = std::env::var("SSH_HOST").map_err(|_| {
                anyhow::anyhow!("--baseline ssh needs --ssh-target user@host or SSH_HOST")
            })?;
            let host = host.split(',').next().unwrap_or_default().to_string();
            let user = std::env::var("SSH_USER").unwrap_or_else(|_| "openshell".to_string());
            format!("{user}@{host}")
        }
    };
    let mut argv: Vec<String> = vec![
        "ssh".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-p".into(),
        targets.ssh_port.to_string(),
    ];
    if let Some(key) = &targets.ssh_key {
        argv.extend([
            "-i".into(),
            key.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
        ]);
    }
    if let Some(known) = &targets.ssh_known_hosts {
        argv.extend([
            "-o".into(),
            format!("UserKnownHostsFile={}", known.display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
        ]);
    }
    if kind == BaselineKind::SshMux {
        let socket = dir.join("mux-%C");
        argv.extend([
            "-o".into(),
            "ControlMaster=auto".into(),
            "-o".into(),
            format!("ControlPath={}", socket.display()),
            "-o".into(),
            "ControlPersist=300".into(),
        ]);
    }
    argv.push(target);
    Ok(argv)
}
