//! `deploy/nats/accounts.conf` on a real nats-server with a real worker: an agent submits as its
//! own tenant and reads its own replies, but cannot submit as another tenant, read another
//! tenant's inbox, or read audit events; the auditor reads audit.

mod ops;
mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use openshell_protocol::{ExecRequest, ExecResult, Verdict};
use openshell_worker::durable::client::DurableClient;
use support::worker::WorkerProcess;
use tokio::sync::mpsc;

const PASSWORDS: &[(&str, &str)] = &[
    ("OPENSHELL_WORKER_PASSWORD", "worker-secret"),
    ("OPENSHELL_AUDITOR_PASSWORD", "auditor-secret"),
    ("OPENSHELL_SYS_PASSWORD", "sys-secret"),
    ("OPENSHELL_AGENT_ACME_PASSWORD", "acme-secret"),
    ("OPENSHELL_AGENT_GLOBEX_PASSWORD", "globex-secret"),
];

/// nats-server on `deploy/nats/accounts.conf`, on a free port; killed on drop.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server() -> Option<Server> {
    let bin = ops::tool("nats-server", "run deploy/setup.sh --install-only")?;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port();
    let child = Command::new(bin)
        .arg("--config")
        .arg(ops::deploy_dir().join("nats/accounts.conf"))
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .env("OPENSHELL_NATS_STORE_DIR", dir.path())
        .envs(PASSWORDS.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nats-server");
    // Owned at once, so every path below kills and reaps it.
    let server = Server {
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

/// Connects as `user`, with `_INBOX.<inbox>` as inbox prefix; server errors go to the receiver.
async fn connect(
    url: &str,
    user: &str,
    password: &str,
    inbox: &str,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (errors, receiver) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .custom_inbox_prefix(format!("_INBOX.{inbox}"))
        .event_callback(move |event| {
            let errors = errors.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = errors.send(error.to_string());
                }
            }
        })
        .connect(url)
        .await
        .unwrap_or_else(|error| panic!("{user} connects: {error}"));
    (client, receiver)
}

/// Waits for a permissions violation naming `subject`.
async fn violation(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) {
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

fn request(id: &str) -> bytes::Bytes {
    serde_json::to_vec(&ExecRequest::code(id, "bash", "echo hi"))
        .expect("encode request")
        .into()
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_are_confined_to_their_tenant_and_auditors_read_audit() {
    let Some(server) = start_server().await else {
        return;
    };
    let _worker = WorkerProcess::start(&[
        ("NATS_URL", server.url.as_str()),
        ("NATS_USER", "worker"),
        ("NATS_PASSWORD", "worker-secret"),
        ("SANDBOX_BACKEND", "none"),
    ])
    .await;
    let (auditor, _) = connect(&server.url, "auditor", "auditor-secret", "auditor").await;
    let mut audit = auditor
        .subscribe("openshell.audit.>")
        .await
        .expect("auditor subscribes to audit");
    auditor.flush().await.expect("flush");
    let (acme, mut acme_errors) = connect(&server.url, "agent-acme", "acme-secret", "acme").await;

    // Its own tenant: the worker runs the job and the reply reaches acme's inbox.
    let reply = tokio::time::timeout(
        Duration::from_secs(20),
        acme.request("openshell.exec.none.acme", request("acme-1")),
    )
    .await
    .expect("reply in time")
    .expect("acme's own request is answered");
    let result: ExecResult = serde_json::from_slice(&reply.payload).expect("result JSON");
    assert_eq!(result.status, Verdict::Completed, "{result:?}");
    assert_eq!(result.tenant, "acme");

    // The auditor saw acme's job.
    let event = tokio::time::timeout(Duration::from_secs(5), audit.next())
        .await
        .expect("audit event in time")
        .expect("audit subscription open");
    assert!(
        event.subject.starts_with("openshell.audit.acme."),
        "{}",
        event.subject
    );

    // Another tenant's subject: refused by the server, so no worker ever sees it.
    acme.publish("openshell.exec.none.globex", request("acme-as-globex"))
        .await
        .expect("publish is sent; the server refuses it");
    violation(&mut acme_errors, "openshell.exec.none.globex").await;

    // Audit, and another tenant's inbox: refused.
    let _audit = acme.subscribe("openshell.audit.>").await.expect("sent");
    violation(&mut acme_errors, "openshell.audit.>").await;
    let _inbox = acme.subscribe("_INBOX.globex.>").await.expect("sent");
    violation(&mut acme_errors, "_INBOX.globex.>").await;

    // Nothing of globex's reached the auditor either: the refused request was never audited.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(200), audit.next()).await
    {
        assert!(
            !event.subject.starts_with("openshell.audit.globex."),
            "a request as globex got through: {}",
            event.subject
        );
    }
}

/// The CLI as an agent: `openshell exec`, `submit` and `result` pick the tenant's inbox prefix,
/// so they work with nothing but the agent's own grants (core and durable mode).
#[tokio::test(flavor = "multi_thread")]
async fn agent_cli_exec_submit_and_result_work_with_the_agents_grants() {
    let Some(server) = start_server().await else {
        return;
    };
    let url = server.url.as_str();
    let _worker = WorkerProcess::start(&[
        ("NATS_URL", url),
        ("NATS_USER", "worker"),
        ("NATS_PASSWORD", "worker-secret"),
        ("SANDBOX_BACKEND", "none"),
        ("OPENSHELL_DURABLE", "true"),
    ])
    .await;
    let agent = [
        ("NATS_URL", url),
        ("NATS_USER", "agent-acme"),
        ("NATS_PASSWORD", "acme-secret"),
        ("SANDBOX_BACKEND", "none"),
        ("OPENSHELL_TENANT", "acme"),
    ];

    let exec = ["exec", "--lang", "bash", "-c", "echo core-acme"];
    let out = support::cli(exec, &agent).await;
    assert!(out.status.success(), "exec as agent-acme: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "core-acme\n");

    let submit = ["submit", "--id", "acme-durable-1", "--lang", "bash"];
    let out = support::cli(submit.into_iter().chain(["-c", "echo stored-acme"]), &agent).await;
    assert!(out.status.success(), "submit as agent-acme: {out:?}");
    let out = support::cli(["result", "acme-durable-1", "--wait", "30s"], &agent).await;
    assert!(out.status.success(), "result as agent-acme: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "stored-acme\n");

    // A stored result is read by direct get on its own subject, so acme's grants cannot
    // reach globex's results even knowing the job id.
    let globex = [
        ("NATS_URL", url),
        ("NATS_USER", "agent-globex"),
        ("NATS_PASSWORD", "globex-secret"),
        ("SANDBOX_BACKEND", "none"),
        ("OPENSHELL_TENANT", "globex"),
    ];
    let submit = ["submit", "--id", "globex-secret-job", "--lang", "bash"];
    let out = support::cli(
        submit.into_iter().chain(["-c", "echo globex-only"]),
        &globex,
    )
    .await;
    assert!(out.status.success(), "submit as agent-globex: {out:?}");
    let out = support::cli(["result", "globex-secret-job", "--wait", "30s"], &globex).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "globex-only\n",
        "{out:?}"
    );
    let acme = async_nats::ConnectOptions::with_user_and_password(
        "agent-acme".into(),
        "acme-secret".into(),
    )
    .custom_inbox_prefix("_INBOX.acme")
    .request_timeout(Some(Duration::from_secs(2)))
    .connect(url)
    .await
    .expect("agent-acme connects");
    // An agent may publish on its own results subjects (cancel stores a result there), but
    // the stream keeps the first result of a job: a forged one does not replace it.
    acme.publish("openshell.results.acme.acme-durable-1", "forged".into())
        .await
        .expect("publish");
    acme.flush().await.expect("flush");
    let client = DurableClient::new(acme, "openshell");
    let own = client
        .result("acme", "acme-durable-1", Duration::ZERO)
        .await;
    let stdout = match &own {
        Ok(Some(result)) => Some(result.stdout.to_text_lossy()),
        _ => None,
    };
    assert_eq!(
        stdout.as_deref(),
        Some("stored-acme\n"),
        "acme reads its own stored result, unchanged: {own:?}"
    );
    let other = client
        .result("globex", "globex-secret-job", Duration::ZERO)
        .await;
    assert!(
        other.is_err(),
        "acme read globex's stored result: {other:?}"
    );
}
