//! The `openshell` binary under test: a long-running worker, or one CLI call.
//!
//! Cargo tells only the binary's own package where it is (`CARGO_BIN_EXE_openshell`, at
//! compile time, in integration tests), so a test names it once and hands it in:
//!
//! ```ignore
//! const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));
//! let output = OPENSHELL.cli(["config"], &[]).await;
//! ```

use std::ffi::OsStr;
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::nats::NatsServer;

/// The line the worker prints on stderr once it is serving.
pub const READY_LINE: &str = "OpenShell worker ready";
/// What the worker logs before its metrics address, `metrics on http://ADDR/metrics`.
const METRICS_LINE: &str = "metrics on http://";
/// How long the worker may take to print [`READY_LINE`].
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the worker may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a dropped worker may take to exit after SIGTERM before SIGKILL.
const DROP_TIMEOUT: Duration = Duration::from_secs(10);
/// Variables passed through from the test's environment; everything else is the caller's.
const KEPT_ENV: &[&str] = &["PATH", "HOME", "TMPDIR", "RUST_BACKTRACE"];

/// The `openshell` binary at a path; runs it with a near-empty environment plus the
/// caller's variables, so the host's settings do not leak into a test.
#[derive(Debug, Clone, Copy)]
pub struct Openshell {
    bin: &'static str,
}

impl Openshell {
    /// The binary at `bin`: `env!("CARGO_BIN_EXE_openshell")` in the worker's tests.
    pub const fn at(bin: &'static str) -> Self {
        Self { bin }
    }

    /// Runs the CLI once with `args` and `envs`, and returns its output.
    pub async fn cli<I, S>(&self, args: I, envs: &[(&str, &str)]) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(args, envs)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap_or_else(|error| panic!("run {}: {error}", self.bin))
    }

    /// Spawns `openshell worker` with `envs` and waits for [`READY_LINE`].
    pub async fn worker(&self, envs: &[(&str, &str)]) -> WorkerProcess {
        WorkerProcess::start(self, envs).await
    }

    /// A worker on `nats` serving the local backend (pool `none`), with `extra` variables.
    pub async fn local_worker(&self, nats: &NatsServer, extra: &[(&str, &str)]) -> WorkerProcess {
        let url = nats.url();
        let mut envs = vec![("NATS_URL", url.as_str()), ("SANDBOX_BACKEND", "none")];
        envs.extend_from_slice(extra);
        self.worker(&envs).await
    }

    /// The binary with a near-empty environment plus `envs`.
    pub fn command<I, S>(&self, args: I, envs: &[(&str, &str)]) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(self.bin);
        cmd.args(args).env_clear();
        for key in KEPT_ENV {
            if let Some(value) = std::env::var_os(key) {
                cmd.env(key, value);
            }
        }
        cmd.envs(envs.iter().copied());
        cmd
    }
}

/// A running `openshell worker`; stopped on drop with SIGTERM (so that a Docker worker removes
/// its warm containers as it stops), then SIGKILL if it has not exited within 10 s.
pub struct WorkerProcess {
    child: Child,
    log: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl WorkerProcess {
    /// Spawns `openshell worker` of `openshell` with `envs` and waits for [`READY_LINE`].
    pub async fn start(openshell: &Openshell, envs: &[(&str, &str)]) -> WorkerProcess {
        // Several workers share this host in tests: let each pick a free metrics port.
        let mut all_envs = vec![("METRICS_ADDR", "127.0.0.1:0")];
        all_envs.extend_from_slice(envs);
        let mut child = openshell
            .command(["worker"], &all_envs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn openshell worker");
        let log = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            tokio::spawn(capture(
                child.stdout.take().expect("piped stdout"),
                log.clone(),
            )),
            tokio::spawn(capture(
                child.stderr.take().expect("piped stderr"),
                log.clone(),
            )),
        ];
        let mut worker = WorkerProcess {
            child,
            log,
            readers,
        };
        worker.wait_ready().await;
        worker
    }

    /// Everything the worker printed so far (stdout and stderr, line by line).
    pub fn logs(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// The address of its metrics and health endpoints, as it logged it
    /// (`metrics on http://ADDR/metrics`); panics with the logs if it logged none.
    pub fn metrics_addr(&self) -> String {
        let logs = self.logs();
        logs.lines()
            .find_map(|line| {
                let start = line.find(METRICS_LINE)? + METRICS_LINE.len();
                let rest = &line[start..];
                Some(rest[..rest.find("/metrics")?].to_string())
            })
            .unwrap_or_else(|| panic!("worker did not log its metrics address:\n{logs}"))
    }

    /// Sends SIGTERM and waits for the exit; all output is in [`Self::logs`] after.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        let Ok(status) = tokio::time::timeout(EXIT_TIMEOUT, self.child.wait()).await else {
            panic!(
                "worker still running {EXIT_TIMEOUT:?} after SIGTERM:\n{}",
                self.logs()
            );
        };
        self.drain().await;
        status.expect("wait for worker")
    }

    /// The worker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends SIGKILL and waits for the exit.
    pub async fn kill(&mut self) -> ExitStatus {
        self.child.kill().await.expect("kill worker");
        self.drain().await;
        self.child.wait().await.expect("wait for worker")
    }

    /// Sends `signal` while it runs; ESRCH (it just exited) is not an error here.
    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.logs().contains(READY_LINE) {
            if let Some(status) = self.child.try_wait().expect("poll worker") {
                self.drain().await;
                panic!("worker exited with {status} before ready:\n{}", self.logs());
            }
            if Instant::now() > deadline {
                panic!("worker not ready after {READY_TIMEOUT:?}:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the output readers to reach end of file (the process has exited).
    async fn drain(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
    }
}

/// Appends each line to `log` and echoes it to the test's stderr.
async fn capture(stream: impl AsyncRead + Unpin, log: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("[openshell worker] {line}");
        let mut log = log.lock().expect("log lock");
        log.push_str(&line);
        log.push('\n');
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.child.id().is_none() {
            return;
        }
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + DROP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            // Drop cannot await: park this thread briefly (the runtime may be shutting down).
            std::thread::park_timeout(Duration::from_millis(20));
        }
        let _ = self.child.start_kill();
    }
}
