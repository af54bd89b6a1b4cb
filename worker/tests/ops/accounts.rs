//! A nats-server on `deploy/nats/accounts.conf` (the shipped multi-tenant set-up), on a free
//! port and killed on drop, and connections as its users.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::sync::mpsc;

/// The passwords the server reads from its environment, by variable.
pub const PASSWORDS: &[(&str, &str)] = &[
    ("OPENSHELL_WORKER_PASSWORD", "worker-secret"),
    ("OPENSHELL_AUDITOR_PASSWORD", "auditor-secret"),
    ("OPENSHELL_SYS_PASSWORD", "sys-secret"),
    ("OPENSHELL_AGENT_ACME_PASSWORD", "acme-secret"),
    ("OPENSHELL_AGENT_GLOBEX_PASSWORD", "globex-secret"),
];

/// nats-server on `deploy/nats/accounts.conf`; killed on drop.
pub struct AccountsServer {
    child: Child,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for AccountsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AccountsServer {
    /// Starts the server (JetStream in a temporary directory); `None` only outside CI when
    /// nats-server is missing.
    pub async fn start() -> Option<AccountsServer> {
        let bin = super::tool("nats-server", "run deploy/setup.sh --install-only")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new(bin)
            .arg("--config")
            .arg(super::deploy_dir().join("nats/accounts.conf"))
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .env("OPENSHELL_NATS_STORE_DIR", dir.path())
            .envs(PASSWORDS.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        // Owned at once, so every path below kills and reaps it.
        let server = AccountsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(server);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("nats-server with accounts.conf did not start on port {port}");
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
