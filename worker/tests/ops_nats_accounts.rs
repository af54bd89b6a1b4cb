//! `deploy/nats/accounts.conf` on a real nats-server with a real worker: an agent submits as its
//! own tenant and reads its own replies, but cannot submit as another tenant, read another
//! tenant's inbox, or read audit events; the auditor reads audit.

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use openshell_protocol::{ExecRequest, ExecResult, Verdict};
use openshell_test_support::Openshell;
use openshell_test_support::nats::accounts::{AccountsServer, violation};
use openshell_worker::cli::audit::AUDITOR_INBOX;
use openshell_worker::durable::client::DurableClient;

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

fn request(id: &str) -> bytes::Bytes {
    serde_json::to_vec(&ExecRequest::code(id, "bash", "echo hi"))
        .expect("encode request")
        .into()
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_are_confined_to_their_tenant_and_auditors_read_audit() {
    let Some(server) = AccountsServer::start().await else {
        return;
    };
    let _worker = OPENSHELL
        .worker(&[
            ("NATS_URL", server.url.as_str()),
            ("NATS_USER", "worker"),
            ("NATS_PASSWORD", "worker-secret"),
            ("SANDBOX_BACKEND", "none"),
        ])
        .await;
    let (auditor, _) = server.connect("auditor", AUDITOR_INBOX).await;
    let mut audit = auditor
        .subscribe("openshell.audit.>")
        .await
        .expect("auditor subscribes to audit");
    auditor.flush().await.expect("flush");
    let (acme, mut acme_errors) = server.connect("agent-acme", "_INBOX.acme").await;

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

    // Audit beyond its own jobs', and another tenant's inbox: refused.
    let _audit = acme.subscribe("openshell.audit.>").await.expect("sent");
    violation(&mut acme_errors, "openshell.audit.>").await;
    let _theirs = acme
        .subscribe("openshell.audit.globex.>")
        .await
        .expect("sent");
    violation(&mut acme_errors, "openshell.audit.globex.>").await;
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
    let Some(server) = AccountsServer::start().await else {
        return;
    };
    let url = server.url.as_str();
    let _worker = OPENSHELL
        .worker(&[
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
    let out = OPENSHELL.cli(exec, &agent).await;
    assert!(out.status.success(), "exec as agent-acme: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "core-acme\n");

    let submit = ["submit", "--id", "acme-durable-1", "--lang", "bash"];
    let out = OPENSHELL
        .cli(submit.into_iter().chain(["-c", "echo stored-acme"]), &agent)
        .await;
    assert!(out.status.success(), "submit as agent-acme: {out:?}");
    let out = OPENSHELL
        .cli(["result", "acme-durable-1", "--wait", "30s"], &agent)
        .await;
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
    let out = OPENSHELL
        .cli(
            submit.into_iter().chain(["-c", "echo globex-only"]),
            &globex,
        )
        .await;
    assert!(out.status.success(), "submit as agent-globex: {out:?}");
    let out = OPENSHELL
        .cli(["result", "globex-secret-job", "--wait", "30s"], &globex)
        .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "globex-only\n",
        "{out:?}"
    );
    let (acme, _) = server.connect("agent-acme", "_INBOX.acme").await;
    // Agents may not publish results at all (the server refuses it), and the stream keeps
    // the first result of a job anyway: a forged one does not replace it.
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

/// The auditor through the CLI: `openshell audit tail` follows live events and, with --since,
/// replays the OPENSHELL_AUDIT stream (all tenants, or one) on the auditor's grants alone.
#[tokio::test(flavor = "multi_thread")]
async fn auditor_cli_tails_and_replays_audit_with_the_auditors_grants() {
    let Some(server) = AccountsServer::start().await else {
        return;
    };
    let url = server.url.as_str();
    let _worker = OPENSHELL
        .worker(&[
            ("NATS_URL", url),
            ("NATS_USER", "worker"),
            ("NATS_PASSWORD", "worker-secret"),
            ("SANDBOX_BACKEND", "none"),
            ("OPENSHELL_DURABLE", "true"),
        ])
        .await;
    let auditor = [
        ("NATS_URL", url),
        ("NATS_USER", "auditor"),
        ("NATS_PASSWORD", "auditor-secret"),
    ];
    let agent = [
        ("NATS_URL", url),
        ("NATS_USER", "agent-acme"),
        ("NATS_PASSWORD", "acme-secret"),
        ("SANDBOX_BACKEND", "none"),
        ("OPENSHELL_TENANT", "acme"),
    ];

    // Live: the tail is following before the job runs, and prints its events.
    let mut live = Tail::start(&["audit", "tail", "--tenant", "acme"], &auditor).await;
    let out = OPENSHELL
        .cli(["exec", "--lang", "bash", "-c", "echo audited"], &agent)
        .await;
    assert!(out.status.success(), "exec as agent-acme: {out:?}");
    let line = live.next_line().await;
    assert!(line.contains("tenant=acme"), "{line}");

    // Stored: every event of the job, from the stream, then the command ends.
    let out = OPENSHELL
        .cli(["audit", "tail", "--since", "1h", "--no-follow"], &auditor)
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "audit tail --since as auditor: {out:?}"
    );
    for event in ["received", "started", "finished"] {
        assert!(
            stdout
                .lines()
                .any(|line| line.contains(event) && line.contains("tenant=acme")),
            "no {event} event of acme in:\n{stdout}"
        );
    }
    let only_acme = [
        "audit",
        "tail",
        "--since",
        "1h",
        "--no-follow",
        "--tenant",
        "acme",
    ];
    let out = OPENSHELL.cli(only_acme, &auditor).await;
    assert!(out.status.success(), "audit tail --tenant acme: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("tenant=acme"),
        "{out:?}"
    );
    let only_globex = [
        "audit",
        "tail",
        "--since",
        "1h",
        "--no-follow",
        "--tenant",
        "globex",
    ];
    let out = OPENSHELL.cli(only_globex, &auditor).await;
    assert!(out.status.success(), "audit tail --tenant globex: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{out:?}");

    // Stored, then live: the job's three stored events, then a new job's three, each once.
    let replay_then_follow = ["audit", "tail", "--since", "1h", "--tenant", "acme"];
    let mut tail = Tail::start(&replay_then_follow, &auditor).await;
    let mut stored = Vec::new();
    for _ in 0..3 {
        stored.push(job_of(&tail.next_line().await));
    }
    let out = OPENSHELL
        .cli(["exec", "--lang", "bash", "-c", "echo again"], &agent)
        .await;
    assert!(out.status.success(), "second exec as agent-acme: {out:?}");
    for _ in 0..3 {
        let job = job_of(&tail.next_line().await);
        assert!(
            !stored.contains(&job),
            "a stored event came again live: {job}"
        );
    }

    // An agent lacks these grants: the CLI names the refused permission instead of timing out.
    let out = OPENSHELL
        .cli(["audit", "tail", "--since", "1h", "--no-follow"], &agent)
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "agent read the audit stream: {out:?}"
    );
    assert!(stderr.contains("Permissions Violation"), "{stderr}");
    assert!(stderr.contains("deploy/nats/accounts.conf"), "{stderr}");
}

/// The auditor can change nothing: no publishing on openshell.*, no purge or delete of the
/// audit stream or its messages, no consumers, no other stream.
#[tokio::test(flavor = "multi_thread")]
async fn auditor_cannot_publish_purge_or_delete() {
    let Some(server) = AccountsServer::start().await else {
        return;
    };
    let _worker = OPENSHELL
        .worker(&[
            ("NATS_URL", server.url.as_str()),
            ("NATS_USER", "worker"),
            ("NATS_PASSWORD", "worker-secret"),
            ("SANDBOX_BACKEND", "none"),
            ("OPENSHELL_DURABLE", "true"),
        ])
        .await;
    let (auditor, mut errors) = server.connect("auditor", AUDITOR_INBOX).await;
    let refused = [
        "openshell.exec.none.acme",
        "openshell.jobs.none.acme",
        "openshell.audit.acme.none.finished",
        "openshell.results.acme.forged",
        "$JS.API.STREAM.PURGE.OPENSHELL_AUDIT",
        "$JS.API.STREAM.DELETE.OPENSHELL_AUDIT",
        "$JS.API.STREAM.UPDATE.OPENSHELL_AUDIT",
        "$JS.API.STREAM.MSG.DELETE.OPENSHELL_AUDIT",
        "$JS.API.STREAM.INFO.OPENSHELL_AUDIT",
        // A push consumer would let it have the server deliver audit events onto any subject.
        "$JS.API.CONSUMER.CREATE.OPENSHELL_AUDIT.peek.openshell.audit.>",
        "$JS.API.CONSUMER.CREATE.OPENSHELL_AUDIT",
        "$JS.API.STREAM.MSG.GET.OPENSHELL_RESULTS",
        "$JS.API.STREAM.PURGE.OPENSHELL_RESULTS",
        "$JS.API.STREAM.MSG.DELETE.OPENSHELL_RESULTS",
        "openshell.audit.checkpoint.forged",
    ];
    for subject in refused {
        auditor
            .publish(subject, "{}".into())
            .await
            .expect("publish is sent; the server refuses it");
        violation(&mut errors, subject).await;
    }
    // Nor read anything but audit events and its own replies.
    for subject in ["openshell.results.>", "openshell.exec.>", "_INBOX.acme.>"] {
        let _refused = auditor.subscribe(subject).await.expect("sent");
        violation(&mut errors, subject).await;
    }
}

/// The auditor verifies the trail (chains, signed checkpoints, stored results) and exports it
/// on its own grants, and the export verifies offline.
#[tokio::test(flavor = "multi_thread")]
async fn auditor_verifies_and_exports_with_the_auditors_grants() {
    let Some(server) = AccountsServer::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("audit-key.pem");
    let public = dir.path().join("audit-key.pub.pem");
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            key.to_str().unwrap(),
        ],
        vec![
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
    ] {
        let status = std::process::Command::new("openssl").args(&args).status();
        assert!(status.is_ok_and(|s| s.success()), "openssl {args:?}");
    }
    let url = server.url.as_str();
    let mut worker = OPENSHELL
        .worker(&[
            ("NATS_URL", url),
            ("NATS_USER", "worker"),
            ("NATS_PASSWORD", "worker-secret"),
            ("SANDBOX_BACKEND", "none"),
            ("OPENSHELL_DURABLE", "true"),
            ("OPENSHELL_AUDIT_KEY", key.to_str().unwrap()),
        ])
        .await;
    let agent = [
        ("NATS_URL", url),
        ("NATS_USER", "agent-acme"),
        ("NATS_PASSWORD", "acme-secret"),
        ("SANDBOX_BACKEND", "none"),
        ("OPENSHELL_TENANT", "acme"),
    ];
    let submit = [
        "submit",
        "--id",
        "audited-1",
        "--lang",
        "bash",
        "-c",
        "echo audited",
    ];
    let out = OPENSHELL.cli(submit, &agent).await;
    assert!(out.status.success(), "submit as agent-acme: {out:?}");
    let out = OPENSHELL
        .cli(["result", "audited-1", "--wait", "30s"], &agent)
        .await;
    assert!(out.status.success(), "result as agent-acme: {out:?}");
    worker.terminate().await;

    let auditor = [
        ("NATS_URL", url),
        ("NATS_USER", "auditor"),
        ("NATS_PASSWORD", "auditor-secret"),
    ];
    let public = public.to_str().unwrap();
    let out = OPENSHELL
        .cli(["audit", "verify", "--key", public], &auditor)
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "audit verify as auditor: {out:?}");
    assert!(
        stdout.contains("1 jobs compared with OPENSHELL_RESULTS"),
        "{stdout}"
    );
    let export = dir.path().join("audit.jsonl");
    let out = OPENSHELL
        .cli(
            ["audit", "export", "--out", export.to_str().unwrap()],
            &auditor,
        )
        .await;
    assert!(out.status.success(), "audit export as auditor: {out:?}");
    let out = OPENSHELL
        .cli(
            [
                "audit",
                "verify",
                "--file",
                export.to_str().unwrap(),
                "--key",
                public,
            ],
            &[],
        )
        .await;
    assert!(out.status.success(), "offline verify: {out:?}");
}

/// The job id of a summary line of `audit tail` (`... job=<id> ...`).
fn job_of(line: &str) -> String {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("job="))
        .unwrap_or_else(|| panic!("no job in {line:?}"))
        .to_string()
}

/// `openshell` running until killed, its stdout read line by line.
struct Tail {
    child: tokio::process::Child,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Tail {
    /// Starts `openshell args` and waits for its `following` line on stderr.
    async fn start(args: &[&str], envs: &[(&str, &str)]) -> Tail {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_openshell"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn openshell");
        let mut stderr = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let following = tokio::time::timeout(Duration::from_secs(20), async {
            let mut seen = String::new();
            while let Ok(Some(line)) = stderr.next_line().await {
                if line.starts_with("following ") {
                    return Ok(());
                }
                seen.push_str(&line);
            }
            Err(seen)
        })
        .await;
        assert_eq!(following, Ok(Ok(())), "openshell {args:?} is not following");
        let stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        Tail { child, stdout }
    }

    /// The next line printed.
    async fn next_line(&mut self) -> String {
        let line = tokio::time::timeout(Duration::from_secs(20), self.stdout.next_line()).await;
        match line {
            Ok(Ok(Some(line))) => line,
            other => panic!(
                "no line from the tail: {other:?}; exit: {:?}",
                self.child.try_wait()
            ),
        }
    }
}
