//! The `openshell` binary under test: a long-running worker, or one CLI call.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;
use tokio::task::JoinHandle;

/// The line the worker prints on stderr once it is serving.
pub const READY_LINE: &str = "OpenShell worker ready";
/// How long the worker may take to print [`READY_LINE`].
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the worker may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `openshell worker`; stopped on drop with SIGTERM (so that a Docker worker removes
/// its warm containers as it stops), then SIGKILL if it has not exited within 10 s.
pub struct WorkerProcess {
    child: Child,
    log: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl WorkerProcess {
    /// Spawns `openshell worker` with `envs` and waits for [`READY_LINE`].
    pub async fn start(envs: &[(&str, &str)]) -> WorkerProcess {
        // Several workers share this host in tests: let each pick a free metrics port.
        let mut all_envs = vec![("METRICS_ADDR", "127.0.0.1:0")];
        all_envs.extend_from_slice(envs);
        let mut child = super::command(["worker"], &all_envs)
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

    /// A worker on `nats` serving the local backend (pool `none`), with `extra` variables.
    pub async fn local(nats: &super::nats::NatsServer, extra: &[(&str, &str)]) -> WorkerProcess {
        let url = nats.url();
        let mut envs = vec![("NATS_URL", url.as_str()), ("SANDBOX_BACKEND", "none")];
        envs.extend_from_slice(extra);
        Self::start(&envs).await
    }

    /// Everything the worker printed so far (stdout and stderr, line by line).
    pub fn logs(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Sends SIGTERM and waits for the exit; all output is in [`Self::logs`] after.
    pub async fn terminate(&mut self) -> ExitStatus {
        if let Some(id) = self.child.id() {
            let pid = Pid::from_raw(i32::try_from(id).expect("pid fits i32"));
            // ESRCH only means it already exited; wait() below tells how.
            let _ = kill(pid, Signal::SIGTERM);
        }
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
        let Some(id) = self.child.id() else {
            return;
        };
        let pid = Pid::from_raw(i32::try_from(id).expect("pid fits i32"));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
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
