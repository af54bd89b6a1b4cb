//! A throw-away OpenSSH server on a free loopback port, serving this machine as prepared by
//! `deploy/ssh-host/prepare.sh` itself, so the documented host set-up is what the tests run
//! against: transport user `openshell-test`, its root-owned authorized key, the sandbox
//! helper and its sudo rule, the job uid pool and the sshd `Match` block. The server has its
//! own host key and known_hosts file, includes the `Match` block prepare.sh wrote, and is
//! killed on drop.
//!
//! sshd cannot pick its own port and report it, so the server gets [`crate::free_port`].

mod backend;
mod prepare;

pub use backend::SshdBackend;

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, Uid};
use openshell_backend_ssh::SshSettings;
use openshell_protocol::DurationMs;
use tempfile::TempDir;

use crate::process;

/// The OpenSSH server binary.
const SSHD: &str = "/usr/sbin/sshd";
/// The transport user the tests log in as (prepare.sh --user).
pub const TEST_USER: &str = "openshell-test";
/// Tools prepare.sh installs that the tests cannot do without.
const TOOLS: [&str; 3] = [SSHD, "/usr/bin/bwrap", "/usr/bin/sudo"];
/// How long the server may take to greet.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running sshd; killed (with its connections) on drop.
pub struct Sshd {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl Sshd {
    /// Prepares this machine with prepare.sh (once) and starts a server, or returns `None`
    /// with a skip message when a tool or root is missing outside CI. Under `CI=true` a
    /// missing tool panics.
    pub async fn start() -> Option<Sshd> {
        if !can_run() {
            return None;
        }
        let client_key = prepare::ensure_prepared();
        let dir = tempfile::tempdir().expect("tempdir for sshd");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let mut sshd = Sshd {
            port: crate::free_port(),
            dir,
            child: None,
        };
        keygen(&sshd.host_key());
        // A copy per server: tests change its mode.
        std::fs::copy(&client_key, sshd.client_key()).expect("copy the client key");
        std::fs::copy(
            client_key.with_extension("pub"),
            sshd.client_key().with_extension("pub"),
        )
        .expect("copy the client public key");
        std::fs::set_permissions(sshd.client_key(), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        sshd.write_config();
        sshd.write_known_hosts();
        sshd.spawn().await;
        Some(sshd)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The client's private key (mode 600).
    pub fn client_key(&self) -> PathBuf {
        self.path("client_key")
    }

    /// The known_hosts file listing this server's key.
    pub fn known_hosts(&self) -> PathBuf {
        self.path("known_hosts")
    }

    /// sshd's log (`-e`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }

    /// The environment of an `openshell worker` whose ssh pool reaches this server.
    pub fn worker_env(&self) -> Vec<(&'static str, String)> {
        let path = |path: PathBuf| path.to_str().expect("UTF-8 path").to_string();
        vec![
            ("SANDBOX_BACKEND", "ssh".to_string()),
            ("SSH_HOST", "127.0.0.1".to_string()),
            ("SSH_PORT", self.port.to_string()),
            ("SSH_USER", TEST_USER.to_string()),
            ("SSH_KEY_PATH", path(self.client_key())),
            ("SSH_KNOWN_HOSTS", path(self.known_hosts())),
        ]
    }

    /// Pool settings that reach this server as the test user.
    pub fn settings(&self) -> SshSettings {
        SshSettings {
            hosts: vec![format!("127.0.0.1:{}", self.port)],
            user: TEST_USER.to_string(),
            key_path: Some(self.client_key()),
            port: self.port,
            known_hosts: Some(self.known_hosts()),
            connect_timeout: DurationMs::secs(5),
            retry_down_host_after: DurationMs(500),
            ..SshSettings::default()
        }
    }

    /// Kills the listener and every sshd process serving a connection, as a crash of the
    /// host's sshd would: connections drop, the jobs' own processes are left running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let listener = i32::try_from(child.id()).expect("pid fits i32");
        let serving = sshd_descendants(listener);
        // The listener first, so no connection is accepted half-way while the rest go.
        process::kill_and_reap(&mut child);
        for pid in serving.into_iter().chain(sshd_descendants(listener)) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Stops and starts again on the same port with the same keys.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Gives the server a new host key (known_hosts keeps the old one) and restarts it.
    pub async fn change_host_key(&mut self) {
        self.stop();
        let key = self.host_key();
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        keygen(&key);
        self.spawn().await;
    }

    /// Host pids of the processes serving this server's connections whose command line
    /// contains `pattern`: sshd's own (`sshd: openshell-test`), sudo, the sandbox helper
    /// (`sandbox run`), and the jobs below them.
    pub fn serving(&self, pattern: &str) -> Vec<i32> {
        let Some(listener) = self.child.as_ref().map(Child::id) else {
            return Vec::new();
        };
        let listener = i32::try_from(listener).expect("pid fits i32");
        process::descendants(listener)
            .into_iter()
            .map(|(pid, _)| pid)
            .filter(|pid| process::cmdline(*pid).contains(pattern))
            .collect()
    }

    /// TCP connections established to this server now, from /proc/net/tcp.
    pub fn established_connections(&self) -> usize {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let local = format!("0100007F:{:04X}", self.port);
        table
            .lines()
            .skip(1)
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"01")
            })
            .count()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn host_key(&self) -> PathBuf {
        self.path("host_key")
    }

    /// This server's own settings, then the `Match` block prepare.sh wrote for the test user
    /// (keys, sessions, no forwarding), exactly as the host's own sshd would read it.
    fn write_config(&self) {
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile none\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\n\
             AllowUsers {TEST_USER}\nMaxStartups 100:30:200\nLogLevel VERBOSE\n\
             Include /etc/ssh/sshd_config.d/openshell-{TEST_USER}.conf\n",
            port = self.port,
            host_key = self.host_key().display(),
        );
        std::fs::write(self.path("sshd_config"), config).expect("sshd_config");
    }

    fn write_known_hosts(&self) {
        let public =
            std::fs::read_to_string(self.host_key().with_extension("pub")).expect("host key");
        let mut parts = public.split_whitespace();
        let (algorithm, key) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let line = format!("[127.0.0.1]:{} {algorithm} {key}\n", self.port);
        std::fs::write(self.known_hosts(), line).expect("known_hosts");
    }

    async fn spawn(&mut self) {
        std::fs::create_dir_all("/run/sshd").expect("sshd privilege separation directory");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("sshd.log"))
            .expect("sshd log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut greeting = [0u8; 4];
                if stream.read_exact(&mut greeting).is_ok() && &greeting == b"SSH-" {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("sshd exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not greet within {READY_TIMEOUT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True when the tools and root the server needs are here; otherwise a skip message, or a
/// panic under CI.
fn can_run() -> bool {
    if let Some(missing) = TOOLS.iter().find(|tool| !Path::new(tool).exists()) {
        if crate::in_ci() {
            panic!(
                "{missing} not found: run deploy/setup.sh --install-only (installs openssh-server, sudo, bubblewrap)"
            );
        }
        eprintln!("SKIP: {missing} not found (deploy/setup.sh --install-only installs it)");
        return false;
    }
    if !Uid::effective().is_root() {
        if crate::in_ci() {
            panic!("the SSH tests run deploy/ssh-host/prepare.sh and start sshd: run them as root");
        }
        eprintln!(
            "SKIP: the SSH tests need root (they run deploy/ssh-host/prepare.sh and start sshd)"
        );
        return false;
    }
    true
}

/// Every `sshd` process below `root` (per-connection monitors and their unprivileged children).
fn sshd_descendants(root: i32) -> Vec<i32> {
    process::descendants(root)
        .into_iter()
        .filter(|(_, comm)| comm.starts_with("sshd"))
        .map(|(pid, _)| pid)
        .collect()
}

/// Writes a new ed25519 key pair at `path` (mode 600) and `path.pub`.
pub fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen (openssh-client)");
    assert!(status.success(), "ssh-keygen failed");
}
