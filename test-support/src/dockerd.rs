//! Docker for integration tests: the host's daemon (started by `deploy/setup.sh`), checked
//! once, backends and pools on it, and a private `dockerd` on its own socket and data root for
//! tests that stop and restart the daemon.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use openshell_backend::{Backend, PoolContext};
use openshell_backend_docker::{DockerBackend, DockerSettings};
use openshell_protocol::{ByteSize, DurationMs, Limits};
use tempfile::TempDir;

use crate::process;

/// How long a private daemon may take to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a private daemon may take to stop before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The sandbox image the tests use (`SANDBOX_DOCKER_IMAGE` overrides it).
pub fn image() -> String {
    std::env::var("SANDBOX_DOCKER_IMAGE").unwrap_or_else(|_| "openshell-sandbox:latest".into())
}

/// Whether the host's daemon answers and has the sandbox image. Outside CI a missing daemon
/// or image is a skip (with a message); under `CI=true` it panics.
pub fn available() -> bool {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        docker(None, &["version", "--format", "{{.Server.Version}}"])
            .map_err(|error| format!("no Docker daemon answers ({error})"))?;
        docker(None, &["image", "inspect", "--format", "{{.Id}}", &image()])
            .map_err(|_| format!("the sandbox image {} is missing", image()))?;
        Ok(())
    });
    match checked {
        Ok(()) => true,
        Err(why) if crate::in_ci() => panic!("{why}: run deploy/setup.sh"),
        Err(why) => {
            eprintln!("SKIP: {why}; run deploy/setup.sh to start dockerd and build the image");
            false
        }
    }
}

/// Docker settings for tests: the test image and `warm` warm containers, on the host's
/// daemon or on `endpoint`.
pub fn settings(warm: usize, endpoint: Option<&str>) -> DockerSettings {
    DockerSettings {
        image: image(),
        warm_pool: warm,
        endpoint: endpoint.map(str::to_string),
        ..DockerSettings::default()
    }
}

/// Default limits like the conformance suite's quiet ones, so its well-behaved jobs take warm
/// containers.
pub fn quiet_limits() -> Limits {
    Limits {
        timeout: Some(DurationMs::secs(20)),
        output: Some(ByteSize::mib(1)),
        ..Limits::default()
    }
}

/// The pool context of a test pool `name`: [`quiet_limits`] as its defaults, the built-in
/// languages, no metrics.
pub fn context(name: &str) -> PoolContext {
    PoolContext {
        defaults: quiet_limits(),
        ..PoolContext::bare(name)
    }
}

/// A unique pool name for this test process and `name`, to find its containers by label.
pub fn pool_name(name: &str) -> String {
    format!("test-{name}-{}", std::process::id())
}

/// The label that marks the containers of pool `name`.
pub fn pool_label(name: &str) -> String {
    format!("openshell.pool={name}")
}

/// A Docker backend for pool `name` on the host's daemon, or `None` (skip) when there is none.
pub fn backend(name: &str, warm: usize) -> Option<DockerBackend> {
    if !available() {
        return None;
    }
    Some(DockerBackend::new(settings(warm, None), &context(name)).expect("docker backend"))
}

/// [`backend`] behind the trait, as the conformance suite takes it.
pub fn shared(name: &str, warm: usize) -> Option<Arc<dyn Backend>> {
    backend(name, warm).map(|backend| Arc::new(backend) as Arc<dyn Backend>)
}

/// Runs the `docker` CLI against `host` (the default daemon when `None`); its stdout, or
/// its stderr as the error.
pub fn docker(host: Option<&str>, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new("docker");
    command.args(args).stdin(Stdio::null());
    if let Some(host) = host {
        command.env("DOCKER_HOST", host);
    }
    let output = command
        .output()
        .map_err(|error| format!("docker: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// Ids of the containers (running or not) carrying `label` (`key=value`) on `host`.
pub fn containers_with(host: Option<&str>, label: &str) -> Vec<String> {
    let filter = format!("label={label}");
    docker(host, &["ps", "-aq", "--filter", &filter])
        .unwrap_or_else(|error| panic!("docker ps --filter {filter}: {error}"))
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits up to `within` for no container with `label` to be left on `host`.
pub async fn assert_none_left(host: Option<&str>, label: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = containers_with(host, label);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "containers with {label} left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `dockerd` of the test's own (own socket, data root, exec root), with the sandbox image
/// copied in from the host's daemon; stopped and its files removed on drop.
pub struct PrivateDockerd {
    dir: TempDir,
    child: Option<Child>,
}

impl PrivateDockerd {
    /// Starts one and loads the sandbox image into it.
    pub async fn start() -> PrivateDockerd {
        // Under /var/tmp: dockerd's overlay mounts need a real filesystem, not a tmpfs.
        let dir = tempfile::Builder::new()
            .prefix("openshell-dockerd-")
            .tempdir_in("/var/tmp")
            .expect("tempdir for dockerd");
        let mut daemon = PrivateDockerd { dir, child: None };
        daemon.spawn().await;
        let load = format!(
            "docker save {image} | DOCKER_HOST={host} docker load -q",
            image = image(),
            host = daemon.host()
        );
        let status = Command::new("sh").args(["-c", &load]).status().expect("sh");
        assert!(
            status.success(),
            "copying {} into the private dockerd failed",
            image()
        );
        daemon
    }

    /// Its endpoint, `unix:///…/docker.sock`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.path("docker.sock").display())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Stops it (SIGTERM; dockerd then stops its containers), waiting for the exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::terminate(&mut child, STOP_TIMEOUT).await;
        }
    }

    /// Starts a stopped daemon again with the same data.
    pub async fn start_again(&mut self) {
        self.spawn().await;
    }

    /// Starts it again with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("dockerd.log"))
            .expect("open dockerd log");
        let root = self.dir.path();
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(self.host())
            .args(paths(root))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--ip-forward=false",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        while docker(Some(&self.host()), &["version"]).is_err() {
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!("private dockerd not ready ({exited:?}):\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What it logged.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.path("dockerd.log")).unwrap_or_default()
    }
}

fn paths(root: &Path) -> Vec<String> {
    let at = |name: &str| root.join(name).display().to_string();
    vec![
        format!("--data-root={}", at("data")),
        format!("--exec-root={}", at("exec")),
        format!("--pidfile={}", at("dockerd.pid")),
    ]
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // dockerd bounds its own shutdown (--shutdown-timeout, 15 s by default).
            process::signal(&child, Signal::SIGTERM);
            let _ = child.wait();
        }
        // Overlay mounts dockerd may have left under the data root must go before the files.
        let root = self.dir.path().display().to_string();
        let _ = Command::new("sh")
            .args([
                "-c",
                "awk -v r=\"$1\" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount -l",
                "sh",
                &root,
            ])
            .status();
    }
}
