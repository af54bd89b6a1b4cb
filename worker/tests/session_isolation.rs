//! Sessions under `deploy/nats/accounts.conf` on a real nats-server, with a Docker worker as
//! the `worker` user: acme's session is acme's alone. globex can neither publish on its
//! subjects nor hear that it ended, and naming its id under globex's own tenant finds nothing.
//! Every step is audited with the session id, the code verbatim before it runs.
//! Needs nats-server, dockerd and the sandbox image.

use std::time::Duration;

use futures::StreamExt;
use openshell_protocol::session::{Kernel, SessionOpen, SessionOpened};
use openshell_protocol::{AuditEvent, AuditEventType, Client, ErrorKind, ExecRequest, Subjects};
use openshell_test_support::nats::accounts::{AccountsServer, violation};
use openshell_test_support::{Openshell, WorkerProcess, dockerd};

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

async fn docker_worker(server: &AccountsServer) -> WorkerProcess {
    let env = server.env_as("worker");
    let image = dockerd::image();
    let mut envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    envs.extend([
        ("SANDBOX_BACKEND", "docker"),
        ("SANDBOX_DOCKER_IMAGE", image.as_str()),
        ("SANDBOX_DOCKER_MEMORY", "256m"),
        ("SANDBOX_DOCKER_CPUS", "1"),
        ("OPENSHELL_WORKER_ID", "session-isolation"),
    ]);
    OPENSHELL.worker(&envs).await
}

/// `session`'s subjects as they would be spelled for `tenant`.
fn as_tenant(subjects: &Subjects, session: &SessionOpened, tenant: &str) -> SessionOpened {
    let worker = session.subject.split('.').nth(3).unwrap_or_default();
    SessionOpened {
        subject: subjects.session_run(worker, tenant, &session.session),
        close_subject: subjects.session_close(worker, tenant, &session.session),
        ..session.clone()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_reaches_only_its_own_sessions_and_every_step_is_audited() {
    if !dockerd::available() {
        return;
    }
    let Some(server) = AccountsServer::start().await else {
        return;
    };
    let _worker = docker_worker(&server).await;
    let (operator, _) = server.connect("auditor", "_INBOX_AUDITOR").await;
    let mut audit = operator.subscribe("openshell.audit.>").await.expect("sub");
    operator.flush().await.expect("flush");
    let (acme_nats, _) = server.connect("agent-acme", "_INBOX.acme").await;
    let (globex_nats, mut globex_errors) = server.connect("agent-globex", "_INBOX.globex").await;
    let acme = Client::new(acme_nats, Subjects::default());
    let globex = Client::new(globex_nats.clone(), Subjects::default());

    let open = SessionOpen {
        kernel: Some(Kernel::Python),
        ..SessionOpen::default()
    };
    let session = acme
        .open_session("docker", "acme", &open)
        .await
        .expect("acme opens a session");
    let code = "secret = 41";
    let set = acme
        .session_exec(&session, &ExecRequest::code("set", "python", code))
        .await
        .expect("runs");
    assert_eq!(set.exit_code, Some(0), "{set:?}");

    // globex may not publish on acme's session subjects, nor open as acme, nor listen.
    for subject in [&session.subject, &session.close_subject] {
        globex_nats
            .publish(subject.clone(), "{}".into())
            .await
            .expect("sent");
        violation(&mut globex_errors, subject).await;
    }
    let open_as_acme = Subjects::default().session_open("docker", "acme");
    globex_nats
        .publish(open_as_acme.clone(), "{}".into())
        .await
        .expect("sent");
    violation(&mut globex_errors, &open_as_acme).await;
    let ended = Subjects::default().session_ended("acme", &session.session);
    let _spy = globex_nats.subscribe(ended.clone()).await.expect("sent");
    violation(&mut globex_errors, &ended).await;

    // Under its own tenant, acme's session id names nothing.
    let theirs = as_tenant(globex.subjects(), &session, "globex");
    let theft = globex
        .session_exec(
            &theirs,
            &ExecRequest::code("theft", "python", "print(secret)"),
        )
        .await
        .expect("answered");
    assert_eq!(
        theft.error.as_ref().map(|error| error.kind),
        Some(ErrorKind::NotFound),
        "{theft:?}"
    );
    assert!(theft.stdout.is_empty());
    match globex.close_session(&theirs).await {
        Err(openshell_protocol::ClientError::Session { error, .. }) => {
            assert_eq!(error.kind, ErrorKind::NotFound);
        }
        other => panic!("globex closed acme's session? {other:?}"),
    }

    // acme's session still holds its state.
    let get = acme
        .session_exec(
            &session,
            &ExecRequest::code("get", "python", "print(secret + 1)"),
        )
        .await
        .expect("runs");
    assert_eq!(get.stdout.to_text_lossy(), "42\n", "{get:?}");
    acme.close_session(&session).await.expect("acme closes it");

    // The audit trail: opened, the cell's code before it ran, closed, all naming the session.
    let mut events: Vec<AuditEvent> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !events
        .iter()
        .any(|event| event.event == AuditEventType::SessionClosed)
    {
        let message = tokio::time::timeout_at(deadline, audit.next())
            .await
            .expect("the session's audit events within 15 s")
            .expect("an event");
        if let Ok(event) = serde_json::from_slice::<AuditEvent>(&message.payload) {
            events.push(event);
        }
    }
    let ours = |event: &&AuditEvent| event.session.as_deref() == Some(session.session.as_str());
    let kinds: Vec<AuditEventType> = events
        .iter()
        .filter(ours)
        .map(|event| event.event)
        .collect();
    assert_eq!(
        kinds.first(),
        Some(&AuditEventType::SessionOpened),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last(),
        Some(&AuditEventType::SessionClosed),
        "{kinds:?}"
    );
    let received = events
        .iter()
        .filter(ours)
        .find(|event| event.event == AuditEventType::Received && event.job_id == "set")
        .expect("the cell's received event names the session");
    assert_eq!(received.code.as_deref(), Some(code));
    // globex's attempts on the session are audited as its own, rejected as not found.
    let (acme_events, globex_events): (Vec<&AuditEvent>, Vec<&AuditEvent>) = events
        .iter()
        .filter(ours)
        .partition(|event| event.tenant == "acme");
    assert!(acme_events.len() >= 7, "{kinds:?}");
    assert_eq!(
        globex_events.len(),
        2,
        "the run and the close: {globex_events:?}"
    );
    for event in globex_events {
        assert_eq!(event.event, AuditEventType::Rejected);
        assert_eq!(
            event.error.as_ref().map(|error| error.kind),
            Some(ErrorKind::NotFound)
        );
    }
}
