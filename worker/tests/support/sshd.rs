//! A throw-away OpenSSH server on a free loopback port: its own host key, a dedicated
//! unprivileged user (`openshell-test`, created once), a temporary client key in a temporary
//! authorized_keys, and a known_hosts file for the test. Killed on drop.

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, Uid};
use openshell_protocol::DurationMs;
use openshell_worker::backend::ssh::SshSettings;
use tempfile::TempDir;

/// The OpenSSH server binary.
const SSHD: &str = "/usr/sbin/sshd";
/// The unprivileged user jobs run as in tests.
pub const TEST_USER: &str = "openshell-test";
/// How long the server may take to greet.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running sshd; killed (with its connections) on drop.
pub struct Sshd {
    user: &'static str,
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl Sshd {
    /// Starts a server, or returns `None` with a skip message when sshd or root is missing
    /// outside CI. Under `CI=true` a missing sshd panics.
    pub async fn start() -> Option<Sshd> {
        Self::start_as(TEST_USER).await
    }

    /// Like [`Sshd::start`], for jobs of `user` (created once if missing). Tests that hold
    /// many processes use their own user: RLIMIT_NPROC counts every process of a user.
    pub async fn start_as(user: &'static str) -> Option<Sshd> {
        if !Path::new(SSHD).exists() {
            if super::in_ci() {
                panic!(
                    "{SSHD} not found: run deploy/setup.sh --install-only (installs openssh-server)"
                );
            }
            eprintln!(
                "SKIP: {SSHD} not found (apt-get install openssh-server, or deploy/setup.sh)"
            );
            return None;
        }
        if !Uid::effective().is_root() {
            if super::in_ci() {
                panic!("the SSH tests start sshd and create user {TEST_USER}: run them as root");
            }
            eprintln!(
                "SKIP: the SSH tests need root (they start sshd and create user {TEST_USER})"
            );
            return None;
        }
        ensure_user(user).await;
        let dir = tempfile::tempdir().expect("tempdir for sshd");
        // sshd reads authorized_keys as the user: the directory must be traversable.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let mut sshd = Sshd {
            user,
            port: super::free_port(),
            dir,
            child: None,
        };
        keygen(&sshd.host_key());
        keygen(&sshd.client_key());
        let public =
            std::fs::read(sshd.client_key().with_extension("pub")).expect("client public key");
        let authorized = sshd.path("authorized_keys");
        std::fs::write(&authorized, public).expect("authorized_keys");
        std::fs::set_permissions(&authorized, std::fs::Permissions::from_mode(0o644))
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

    /// Pool settings that reach this server as the test user.
    pub fn settings(&self) -> SshSettings {
        SshSettings {
            hosts: vec![format!("127.0.0.1:{}", self.port)],
            user: self.user.to_string(),
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

    /// Lets the holder of `key` (a private key with `key.pub` beside it) log in too.
    pub fn authorize(&self, key: &Path) {
        let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
        let path = self.path("authorized_keys");
        let mut keys = std::fs::read_to_string(&path).unwrap_or_default();
        keys.push_str(&public);
        std::fs::write(path, keys).expect("authorized_keys");
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

    fn write_config(&self) {
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {authorized}\n\
             PidFile none\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin no\nAllowUsers {user}\n\
             MaxSessions 10\nMaxStartups 100:30:200\nLogLevel VERBOSE\n",
            port = self.port,
            host_key = self.host_key().display(),
            authorized = self.path("authorized_keys").display(),
            user = self.user,
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
        .iter()
        .filter(|(pid, _, comm)| *pid != root && found.contains(pid) && comm.starts_with("sshd"))
        .map(|(pid, _, _)| *pid)
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

/// Creates the test user once: a login shell, a home, and no password (not locked, so
/// sshd without PAM accepts its keys). Concurrent test binaries may race: retry.
async fn ensure_user(user: &str) {
    for _ in 0..50 {
        if nix::unistd::User::from_name(user).ok().flatten().is_some() {
            return;
        }
        let created = Command::new("useradd")
            .args([
                "--create-home",
                "--shell",
                "/bin/sh",
                "--password",
                "*",
                user,
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if created {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not create user {user} with useradd");
}

/// An SSH backend together with the server it talks to, so both live as long as the test.
pub struct SshdBackend {
    /// The server (dropped after the backend).
    pub sshd: Sshd,
    /// The backend under test.
    pub backend: openshell_worker::backend::ssh::SshBackend,
}

impl SshdBackend {
    /// A fresh server and a started backend on it; `None` when the tests must skip.
    pub async fn start() -> Option<Self> {
        Self::start_as(TEST_USER).await
    }

    /// Like [`SshdBackend::start`], for jobs of `user`.
    pub async fn start_as(user: &'static str) -> Option<Self> {
        let sshd = Sshd::start_as(user).await?;
        let backend = openshell_worker::backend::ssh::SshBackend::start(sshd.settings())
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
impl openshell_worker::backend::Backend for SshdBackend {
    fn kind(&self) -> &'static str {
        self.backend.kind()
    }

    fn capabilities(&self) -> openshell_worker::backend::Capabilities {
        self.backend.capabilities()
    }

    async fn health(&self) -> Result<(), openshell_worker::backend::BackendError> {
        self.backend.health().await
    }

    async fn execute(
        &self,
        job: openshell_worker::backend::Job,
        control: openshell_worker::backend::JobControl,
    ) -> Result<openshell_worker::backend::Execution, openshell_worker::backend::BackendError> {
        self.backend.execute(job, control).await
    }
}
