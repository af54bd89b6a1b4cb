//! A nats-server on `deploy/nats/accounts.conf` (the shipped multi-tenant set-up), on a port
//! it picks and killed on drop, and connections as its users.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::sync::mpsc;

use crate::process;

/// The passwords the server reads from its environment, by variable.
pub const PASSWORDS: &[(&str, &str)] = &[
    ("OPENSHELL_WORKER_PASSWORD", "worker-secret"),
    ("OPENSHELL_AUDITOR_PASSWORD", "auditor-secret"),
    ("OPENSHELL_SYS_PASSWORD", "sys-secret"),
    ("OPENSHELL_AGENT_ACME_PASSWORD", "acme-secret"),
    ("OPENSHELL_AGENT_GLOBEX_PASSWORD", "globex-secret"),
];
/// How long the server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The log of the server's stdout and stderr, in its directory.
const LOG: &str = "nats-server.log";

/// nats-server on `deploy/nats/accounts.conf`; killed on drop.
pub struct AccountsServer {
    child: Child,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    dir: TempDir,
}

impl Drop for AccountsServer {
    fn drop(&mut self) {
        process::kill_and_reap(&mut self.child);
    }
}

impl AccountsServer {
    /// Starts the server (JetStream in a temporary directory); `None` only outside CI when
    /// nats-server is missing.
    pub async fn start() -> Option<AccountsServer> {
        let bin = super::binary()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = super::append(&dir.path().join(LOG));
        let child = Command::new(&bin)
            .arg("--config")
            .arg(crate::deploy_dir().join("nats/accounts.conf"))
            .args(["-a", "127.0.0.1", "-p", "-1", "--ports_file_dir"])
            .arg(dir.path())
            .env("OPENSHELL_NATS_STORE_DIR", dir.path())
            .envs(PASSWORDS.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", bin.display()));
        // Owned at once, so every path below kills and reaps it.
        let mut server = AccountsServer {
            child,
            url: String::new(),
            dir,
        };
        let dir = server.dir.path();
        let port = super::picked_port(&mut server.child, dir, || {
            std::fs::read_to_string(dir.join(LOG)).unwrap_or_default()
        })
        .await;
        server.url = format!("nats://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server with accounts.conf did not accept on port {port}:\n{}",
                server.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(server)
    }

    /// Everything the server wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(LOG)).unwrap_or_default()
    }

    /// The environment of a process connecting as `user` (its password from [`PASSWORDS`]).
    pub fn env_as(&self, user: &str) -> Vec<(&'static str, String)> {
        vec![
            ("NATS_URL", self.url.clone()),
            ("NATS_USER", user.to_string()),
            ("NATS_PASSWORD", password(user).to_string()),
        ]
    }

    /// Connects as `user` with `inbox_prefix` (`_INBOX.<tenant>` for an agent); server errors
    /// (permission violations) go to the receiver.
    pub async fn connect(
        &self,
        user: &str,
        inbox_prefix: &str,
    ) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
        let (errors, receiver) = mpsc::unbounded_channel();
        let client =
            async_nats::ConnectOptions::with_user_and_password(user.into(), password(user).into())
                .custom_inbox_prefix(inbox_prefix)
                .request_timeout(Some(Duration::from_secs(5)))
                .event_callback(move |event| {
                    let errors = errors.clone();
                    async move {
                        if let async_nats::Event::ServerError(error) = event {
                            let _ = errors.send(error.to_string());
                        }
                    }
                })
                .connect(&self.url)
                .await
                .unwrap_or_else(|error| panic!("{user} connects: {error}"));
        (client, receiver)
    }
}

/// The password of `user` in the test server.
pub fn password(user: &str) -> &'static str {
    let variable = match user {
        "worker" => "OPENSHELL_WORKER_PASSWORD",
        "auditor" => "OPENSHELL_AUDITOR_PASSWORD",
        "sys" => "OPENSHELL_SYS_PASSWORD",
        "agent-acme" => "OPENSHELL_AGENT_ACME_PASSWORD",
        "agent-globex" => "OPENSHELL_AGENT_GLOBEX_PASSWORD",
        other => panic!("no test password for user {other}"),
    };
    PASSWORDS
        .iter()
        .find(|(name, _)| *name == variable)
        .map(|(_, password)| *password)
        .unwrap_or_else(|| panic!("no password variable {variable}"))
}

/// Waits for a permissions violation naming `subject`.
pub async fn violation(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) {
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(error) = errors.recv().await {
            if error.to_lowercase().contains("permissions violation") && error.contains(subject) {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no permissions violation for {subject}");
}
