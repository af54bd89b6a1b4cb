//! A throw-away OpenSSH server on a free loopback port, serving this machine as prepared by
//! `deploy/ssh-host/prepare.sh` itself, so the documented host set-up is what the tests run
//! against: transport user `openshell-test`, its root-owned authorized key, the sandbox
//! helper and its sudo rule, the job uid pool and the sshd `Match` block. The server has its
//! own host key and known_hosts file, includes the `Match` block prepare.sh wrote, and is
//! killed on drop.
//!
//! prepare.sh runs once per machine and version of the scripts (a stamp under
//! [`PREPARED_DIR`], taken under a lock, so concurrent test processes wait for one run).

use std::collections::hash_map::DefaultHasher;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, Uid};
use openshell_backend_ssh::SshSettings;
use openshell_protocol::DurationMs;
use tempfile::TempDir;

/// The OpenSSH server binary.
const SSHD: &str = "/usr/sbin/sshd";
/// The transport user the tests log in as (prepare.sh --user).
pub const TEST_USER: &str = "openshell-test";
/// The host set-up under test.
const PREPARE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/ssh-host/prepare.sh");
/// The sandbox helper prepare.sh installs, and pid 1 of each sandbox.
const HELPER_SOURCES: [&str; 2] = [
    concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/ssh-host/sandbox"),
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/ssh-host/sandbox-init"
    ),
];
/// The client key prepare.sh authorizes, and the stamps of its runs.
const PREPARED_DIR: &str = "/var/lib/openshell-test";
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
        if let Some(missing) = TOOLS.iter().find(|tool| !Path::new(tool).exists()) {
            if super::in_ci() {
                panic!(
                    "{missing} not found: run deploy/setup.sh --install-only (installs openssh-server, sudo, bubblewrap)"
                );
            }
            eprintln!("SKIP: {missing} not found (deploy/setup.sh --install-only installs it)");
            return None;
        }
        if !Uid::effective().is_root() {
            if super::in_ci() {
                panic!(
                    "the SSH tests run deploy/ssh-host/prepare.sh and start sshd: run them as root"
                );
            }
            eprintln!(
                "SKIP: the SSH tests need root (they run deploy/ssh-host/prepare.sh and start sshd)"
            );
            return None;
        }
        let client_key = ensure_prepared();
        let dir = tempfile::tempdir().expect("tempdir for sshd");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let mut sshd = Sshd {
            port: super::free_port(),
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
        let _ = child.kill();
        let _ = child.wait();
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
        descendants(listener)
            .into_iter()
            .filter(|(pid, _)| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .contains(pattern)
            })
            .map(|(pid, _)| pid)
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

/// Pids of live processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) && pid != std::process::id() as i32 {
            found.push(pid);
        }
    }
    found
}

/// Every `sshd` process below `root` (per-connection monitors and their unprivileged children).
fn sshd_descendants(root: i32) -> Vec<i32> {
    descendants(root)
        .into_iter()
        .filter(|(_, comm)| comm.starts_with("sshd"))
        .map(|(pid, _)| pid)
        .collect()
}

/// Every process below `root`, with its command name.
fn descendants(root: i32) -> Vec<(i32, String)> {
    let processes: Vec<(i32, i32, String)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(") ")?;
            let comm = head.split_once(" (")?.1.to_string();
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid, comm))
        })
        .collect();
    let mut found = vec![root];
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        found.extend(
            processes
                .iter()
                .filter(|(_, ppid, _)| *ppid == parent)
                .map(|(pid, _, _)| *pid),
        );
        index += 1;
    }
    processes
        .into_iter()
        .filter(|(pid, _, _)| *pid != root && found.contains(pid))
        .map(|(pid, _, comm)| (pid, comm))
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

/// Runs deploy/ssh-host/prepare.sh for [`TEST_USER`] unless this version of it (and of the
/// sandbox helper) already ran on this machine; returns the authorized client key.
fn ensure_prepared() -> PathBuf {
    std::fs::create_dir_all(PREPARED_DIR).expect("create the prepared-host directory");
    let lock = File::create(Path::new(PREPARED_DIR).join("prepare.lock")).expect("prepare lock");
    // Held until this function returns: one prepare.sh run at a time on this machine.
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, error)| panic!("lock {PREPARED_DIR}/prepare.lock: {error}"));
    let key = Path::new(PREPARED_DIR).join("client_key");
    if !key.exists() {
        keygen(&key);
    }
    let mut hasher = DefaultHasher::new();
    for file in std::iter::once(PREPARE).chain(HELPER_SOURCES) {
        std::fs::read(file)
            .unwrap_or_else(|error| panic!("read {file}: {error}"))
            .hash(&mut hasher);
    }
    std::fs::read(key.with_extension("pub"))
        .expect("client public key")
        .hash(&mut hasher);
    let stamp = Path::new(PREPARED_DIR).join(format!("prepared-{:016x}", hasher.finish()));
    if !stamp.exists() {
        let output = Command::new("bash")
            .arg(PREPARE)
            .arg("--pubkey")
            .arg(key.with_extension("pub"))
            .args(["--user", TEST_USER])
            .stdin(Stdio::null())
            .output()
            .expect("run deploy/ssh-host/prepare.sh");
        assert!(
            output.status.success(),
            "deploy/ssh-host/prepare.sh failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(&stamp, &output.stdout).expect("write the prepared stamp");
    }
    key
}

/// An SSH backend together with the server it talks to, so both live as long as the test.
pub struct SshdBackend {
    /// The server (dropped after the backend).
    pub sshd: Sshd,
    /// The backend under test.
    pub backend: openshell_backend_ssh::SshBackend,
}

impl SshdBackend {
    /// A fresh server and a started backend on it; `None` when the tests must skip.
    pub async fn start() -> Option<Self> {
        let sshd = Sshd::start().await?;
        let backend = openshell_backend_ssh::SshBackend::start(
            sshd.settings(),
            &openshell_backend::PoolContext::bare("ssh"),
        )
        .await
        .unwrap_or_else(|error| {
            panic!(
                "ssh backend did not start: {error}\nsshd log:\n{}",
                sshd.log()
            )
        });
        Some(Self { sshd, backend })
    }
}

#[async_trait::async_trait]
impl openshell_backend::Backend for SshdBackend {
    fn kind(&self) -> &'static str {
        self.backend.kind()
    }

    fn capabilities(&self) -> openshell_backend::Capabilities {
        self.backend.capabilities()
    }

    async fn health(&self) -> Result<(), openshell_backend::BackendError> {
        self.backend.health().await
    }

    async fn execute(
        &self,
        job: openshell_backend::Job,
        control: openshell_backend::JobControl,
    ) -> Result<openshell_backend::Execution, openshell_backend::BackendError> {
        self.backend.execute(job, control).await
    }
}
