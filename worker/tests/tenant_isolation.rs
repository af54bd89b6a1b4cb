//! Tenant isolation on the bus, tried as a hostile tenant would: `deploy/nats/accounts.conf` on a
//! real nats-server, a real durable worker, and an agent of `acme` using only the grants that
//! file gives it. For every attack, globex's job still runs exactly once, its stored result is
//! its own, acme learns nothing of globex, and the attempt is audited as rejected.
//!
//! Also here: the flood test (one tenant sends 50,000 requests; the worker's memory stays
//! bounded, the flooder gets `overloaded`, and another tenant's job still completes) and the
//! cross-worker job identity of durable mode.

mod durable;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use futures::StreamExt;
use openshell_protocol::{AuditEvent, AuditEventType, ErrorKind, ExecRequest, ExecResult, Verdict};
use openshell_test_support::nats::accounts::{AccountsServer, violation};
use openshell_test_support::nats::{NatsServer, collect_output};
use openshell_test_support::{Openshell, WorkerProcess};
use openshell_worker::durable::client::DurableClient;

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

/// A durable worker on the local backend, as the `worker` user of `accounts.conf`.
async fn worker(server: &AccountsServer, id: &str) -> WorkerProcess {
    let env = server.env_as("worker");
    let mut envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    envs.extend([
        ("SANDBOX_BACKEND", "none"),
        ("OPENSHELL_DURABLE", "true"),
        ("OPENSHELL_WORKER_ID", id),
    ]);
    OPENSHELL.worker(&envs).await
}

fn request(id: &str, script: &str) -> bytes::Bytes {
    serde_json::to_vec(&ExecRequest::code(id, "bash", script))
        .expect("encode request")
        .into()
}

/// The audit stream as an operator reads it (the worker user may read JetStream).
async fn audit(server: &AccountsServer) -> Vec<AuditEvent> {
    let (operator, _) = server.connect("worker", "_INBOX.operator").await;
    durable::audit_events(&operator).await
}

/// Waits until `count` events match `wanted`, and returns the events then.
async fn await_audit(
    server: &AccountsServer,
    count: usize,
    what: &str,
    wanted: impl Fn(&AuditEvent) -> bool,
) -> Vec<AuditEvent> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = audit(server).await;
        if events.iter().filter(|event| wanted(event)).count() >= count {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {count} audit events of {what}: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn started(events: &[AuditEvent], tenant: &str, id: &str) -> usize {
    events
        .iter()
        .filter(|event| {
            event.tenant == tenant && event.job_id == id && event.event == AuditEventType::Started
        })
        .count()
}

fn rejected_as(event: &AuditEvent, tenant: &str, kind: ErrorKind) -> bool {
    event.tenant == tenant
        && event.event == AuditEventType::Rejected
        && event.error.as_ref().map(|error| error.kind) == Some(kind)
}

/// Nothing arrives on `subscription` within a short while.
async fn silent(subscription: &mut async_nats::Subscriber, what: &str) {
    if let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(700), subscription.next()).await
    {
        panic!(
            "{what} received {}: {:?}",
            message.subject,
            String::from_utf8_lossy(&message.payload)
        );
    }
}

/// globex submits `id` (durable) and gets its own result, having run it once.
async fn globex_runs_its_own(server: &AccountsServer, globex: &DurableClient, id: &str) {
    let output = format!("globex-{id}");
    let request = ExecRequest::code(id, "bash", format!("echo {output}"));
    let submitted = globex
        .submit("none", "globex", &request, None)
        .await
        .expect("globex submits");
    assert!(
        !submitted.duplicate,
        "globex's {id} was taken for a duplicate"
    );
    let result = globex
        .result("globex", id, Duration::from_secs(30))
        .await
        .expect("read result")
        .unwrap_or_else(|| panic!("globex's {id} has no result"));
    assert_eq!(result.status, Verdict::Completed, "{result:?}");
    assert_eq!(result.tenant, "globex");
    assert_eq!(result.stdout.to_text_lossy(), format!("{output}\n"));
    let events = await_audit(server, 1, "globex's run", |event| {
        event.tenant == "globex" && event.job_id == id && event.event == AuditEventType::Finished
    })
    .await;
    assert_eq!(started(&events, "globex", id), 1, "globex's {id} ran once");
}

/// Core reply subjects aimed at what acme may not read: refused, audited, never answered, and
/// the job is not run.
#[tokio::test(flavor = "multi_thread")]
async fn core_replies_go_only_to_the_requesting_tenant() {
    let Some(server) = AccountsServer::start().await else {
        return;
    };
    let _worker = worker(&server, "isolation-core").await;
    let (acme, _) = server.connect("agent-acme", "_INBOX.acme").await;
    let (globex_nats, _) = server.connect("agent-globex", "_INBOX.globex").await;
    let mut globex_inbox = globex_nats.subscribe("_INBOX.globex.>").await.expect("sub");
    let mut globex_results = globex_nats
        .subscribe("openshell.results.globex.>")
        .await
        .expect("sub");
    globex_nats.flush().await.expect("flush");

    let forged = [
        "openshell.results.globex.victim-1",
        "openshell.audit.globex.none.finished",
        "openshell.exec.none.globex",
        "openshell.jobs.none.globex.victim-1",
        "_INBOX.globex.stolen.1",
        "$JS.API.STREAM.PURGE.OPENSHELL_AUDIT",
        "$JS.API.STREAM.DELETE.OPENSHELL_RESULTS",
        "$KV.OPENSHELL_ATTEMPTS.globex.victim-1",
        "$JS.API.DIRECT.GET.OPENSHELL_RESULTS.openshell.results.globex.victim-1",
        "elsewhere.globex",
    ];
    for (n, reply) in forged.iter().enumerate() {
        acme.publish_with_reply(
            "openshell.exec.none.acme",
            reply.to_string(),
            request(&format!("forge-{n}"), "echo forged"),
        )
        .await
        .expect("publish");
    }
    acme.flush().await.expect("flush");
    let events = await_audit(&server, forged.len(), "reply_not_allowed", |event| {
        rejected_as(event, "acme", ErrorKind::ReplyNotAllowed)
    })
    .await;
    for n in 0..forged.len() {
        assert_eq!(started(&events, "acme", &format!("forge-{n}")), 0);
    }
    silent(&mut globex_inbox, "globex's inbox").await;
    silent(&mut globex_results, "globex's results").await;

    // The audit and results streams are intact, and acme's own inbox still works.
    let reply = acme
        .request("openshell.exec.none.acme", request("honest", "echo mine"))
        .await
        .expect("acme's own request is answered");
    let result: ExecResult = serde_json::from_slice(&reply.payload).expect("result");
    assert_eq!(result.stdout.to_text_lossy(), "mine\n", "{result:?}");
    let globex = DurableClient::new(globex_nats, "openshell");
    globex_runs_its_own(&server, &globex, "victim-1").await;
    assert!(
        audit(&server).await.len() > forged.len(),
        "the audit stream was not purged"
    );
}

/// Durable mode: the reply header, job-id squatting through `Nats-Msg-Id`, a payload id that
/// is not the subject's, another tenant's subjects, cancels and results.
#[tokio::test(flavor = "multi_thread")]
async fn durable_jobs_belong_to_the_tenant_that_queued_them() {
    let Some(server) = AccountsServer::start().await else {
        return;
    };
    let _worker = worker(&server, "isolation-durable").await;
    let (acme, mut acme_errors) = server.connect("agent-acme", "_INBOX.acme").await;
    let (globex_nats, _) = server.connect("agent-globex", "_INBOX.globex").await;
    let globex = DurableClient::new(globex_nats.clone(), "openshell");
    let acme_jobs = async_nats::jetstream::new(acme.clone());
    let acme_client = DurableClient::new(acme.clone(), "openshell");

    // 1. Openshell-Reply-To at globex's result: acme's own job is refused, and says why.
    let job = ExecRequest::code("reply-hijack", "bash", "echo forged");
    acme_client
        .submit(
            "none",
            "acme",
            &job,
            Some("openshell.results.globex.victim-2"),
        )
        .await
        .expect("acme submits");
    let refused = acme_client
        .result("acme", "reply-hijack", Duration::from_secs(30))
        .await
        .expect("read")
        .expect("acme's job has a stored refusal");
    assert_eq!(refused.status, Verdict::Rejected, "{refused:?}");
    assert_eq!(
        refused.error.as_ref().map(|error| error.kind),
        Some(ErrorKind::ReplyNotAllowed)
    );

    // 2. Squatting: acme queues on its own subject with globex's future id as Nats-Msg-Id.
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", "victim-3");
    acme_jobs
        .publish_with_headers(
            "openshell.jobs.none.acme.victim-3",
            headers,
            request("victim-3", "echo squatted"),
        )
        .await
        .expect("publish")
        .await
        .expect("acme's own job is queued");

    // 3. A payload id that is not the subject's: refused under the subject's id.
    acme_jobs
        .publish(
            "openshell.jobs.none.acme.decoy",
            request("victim-4", "echo decoy"),
        )
        .await
        .expect("publish")
        .await
        .expect("queued");
    let decoy = acme_client
        .result("acme", "decoy", Duration::from_secs(30))
        .await
        .expect("read")
        .expect("the decoy has a stored refusal");
    assert_eq!(
        decoy.error.as_ref().map(|error| error.kind),
        Some(ErrorKind::InvalidRequest),
        "{decoy:?}"
    );

    // 4. globex's subjects, results and cancels: refused by the server.
    for subject in [
        "openshell.jobs.none.globex.victim-5",
        "openshell.cancel.globex.victim-5",
        "openshell.results.globex.victim-5",
        "$JS.API.DIRECT.GET.OPENSHELL_RESULTS.openshell.results.globex.victim-1",
    ] {
        acme.publish(subject, request("victim-5", "echo as-globex"))
            .await
            .expect("sent");
        violation(&mut acme_errors, subject).await;
    }
    let _spy = acme
        .subscribe("openshell.results.globex.>")
        .await
        .expect("sent");
    violation(&mut acme_errors, "openshell.results.globex.>").await;
    assert!(
        acme_client
            .result("globex", "victim-2", Duration::ZERO)
            .await
            .is_err(),
        "acme read a globex result subject"
    );

    // globex's jobs run once each, with their own results.
    for id in ["victim-2", "victim-3", "victim-4", "victim-5"] {
        globex_runs_its_own(&server, &globex, id).await;
    }
    // Resubmitting as the same tenant stays a no-op.
    let again = ExecRequest::code("victim-3", "bash", "echo again");
    globex
        .submit("none", "globex", &again, None)
        .await
        .expect("resubmit");
    let events = await_audit(&server, 1, "the resubmission's refusal", |event| {
        rejected_as(event, "globex", ErrorKind::DuplicateJob) && event.job_id == "victim-3"
    })
    .await;
    assert_eq!(started(&events, "globex", "victim-3"), 1);
    let stored = globex
        .result("globex", "victim-3", Duration::ZERO)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(stored.stdout.to_text_lossy(), "globex-victim-3\n");
    // Every refusal of acme's was audited.
    await_audit(&server, 1, "the payload-id refusal", |event| {
        rejected_as(event, "acme", ErrorKind::InvalidRequest) && event.job_id == "decoy"
    })
    .await;
}

/// Job identity holds across the workers of a pool: with two durable workers, an id queued
/// again while it runs is a duplicate, and the job runs once.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_id_runs_once_across_two_workers() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let _first = durable::worker(&nats, "twin-1", &[]).await;
    let _second = durable::worker(&nats, "twin-2", &[]).await;
    let (connection, client) = durable::client(&nats).await;
    let job = durable::sleeper("twin-job", "2");
    let first = client.submit("none", "default", &job, None).await;
    assert!(!first.expect("queued").duplicate);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        let again = client.submit("none", "default", &job, None).await;
        assert!(
            again.expect("answered").duplicate,
            "queued twice while it runs"
        );
    }
    let results = durable::await_results(
        &client,
        "default",
        &["twin-job".into()],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(results["twin-job"].status, Verdict::Completed);
    let events = durable::audit_events(&connection).await;
    assert_eq!(started(&events, "default", "twin-job"), 1, "{events:#?}");
}

/// Peak resident memory of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .expect("VmHWM in /proc/PID/status")
}

/// The worker's memory bound under a flood, as stated in the README.
const FLOOD_RSS_BOUND: u64 = 100 << 20;

/// One tenant floods a pool with small slots: the worker's memory stays bounded, every request
/// is answered (most as `overloaded`), and another tenant's job still completes.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_is_refused_as_overloaded_and_others_still_run() {
    const FLOOD: usize = 50_000;
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let worker = OPENSHELL
        .local_worker(
            &nats,
            &[
                ("OPENSHELL_SLOTS", "2"),
                ("OPENSHELL_MAX_WAITING", "64"),
                ("OPENSHELL_TENANT_MAX_WAITING", "16"),
            ],
        )
        .await;
    let pid = worker.pid().expect("worker pid");
    let flooder = async_nats::connect(nats.url()).await.expect("connect");
    let inbox = "_INBOX.flooder";
    let mut replies = flooder.subscribe(format!("{inbox}.>")).await.expect("sub");
    flooder.flush().await.expect("flush");
    let job = serde_json::to_vec(&ExecRequest::command("f", vec!["true".into()])).expect("json");
    let counter = tokio::spawn(async move {
        let mut verdicts: HashMap<String, usize> = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        let mut seen = 0;
        while seen < FLOOD {
            let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await else {
                break;
            };
            seen += 1;
            let result: ExecResult = serde_json::from_slice(&message.payload).expect("result");
            let key = match &result.error {
                Some(error) => error.kind.to_string(),
                None => result.status.to_string(),
            };
            *verdicts.entry(key).or_default() += 1;
        }
        verdicts
    });
    let started = Instant::now();
    for n in 0..FLOOD {
        let payload = String::from_utf8_lossy(&job).replace("\"f\"", &format!("\"f-{n}\""));
        flooder
            .publish_with_reply(
                "openshell.exec.none.flooder",
                format!("{inbox}.{n}"),
                payload.into(),
            )
            .await
            .expect("publish");
    }
    flooder.flush().await.expect("flush");
    let sent_in = started.elapsed();

    // Another tenant, during the flood.
    let other = async_nats::connect(nats.url()).await.expect("connect");
    // It waits behind the flood in the worker's subscription (refused at about 10,000 a
    // second), then gets the next slot: it runs fewer jobs than the flooder.
    let bystander = ExecRequest::command("bystander", vec!["echo".into(), "still here".into()]);
    let asked = Instant::now();
    let reply = other
        .send_request(
            "openshell.exec.none.bystander",
            async_nats::Request::new()
                .payload(serde_json::to_vec(&bystander).expect("json").into())
                .timeout(Some(Duration::from_secs(120))),
        )
        .await
        .expect("the bystander is answered");
    eprintln!(
        "flood: the bystander was answered after {:?}",
        asked.elapsed()
    );
    let result: ExecResult = serde_json::from_slice(&reply.payload).expect("result");
    assert_eq!(result.status, Verdict::Completed, "{result:?}");
    assert_eq!(result.stdout.to_text_lossy(), "still here\n");

    let verdicts = counter.await.expect("counter");
    let answered: usize = verdicts.values().sum();
    let peak = peak_rss(pid);
    eprintln!(
        "flood: {FLOOD} sent in {sent_in:?}; answers {verdicts:?}; worker peak RSS {} MiB",
        peak >> 20
    );
    assert_eq!(answered, FLOOD, "every request is answered: {verdicts:?}");
    assert!(
        verdicts.get("overloaded").copied().unwrap_or(0) > 0,
        "{verdicts:?}"
    );
    assert!(
        verdicts.get("completed").copied().unwrap_or(0) > 0,
        "{verdicts:?}"
    );
    assert!(
        peak < FLOOD_RSS_BOUND,
        "worker peak RSS {} MiB is over the stated bound of {} MiB",
        peak >> 20,
        FLOOD_RSS_BOUND >> 20
    );
}

/// Live output: a job that asked for `stream` has its output published on
/// `openshell.output.<tenant>.<id>` before its result, and only its own tenant may read it;
/// agents cannot publish there.
#[tokio::test(flavor = "multi_thread")]
async fn live_output_goes_only_to_its_tenant_and_before_the_result() {
    let Some(server) = AccountsServer::start().await else {
        return;
    };
    let _worker = worker(&server, "isolation-live").await;
    let (acme, mut acme_errors) = server.connect("agent-acme", "_INBOX.acme").await;
    let (globex, mut globex_errors) = server.connect("agent-globex", "_INBOX.globex").await;
    let _spy = globex
        .subscribe("openshell.output.acme.>")
        .await
        .expect("sent");
    violation(&mut globex_errors, "openshell.output.acme.>").await;
    acme.publish("openshell.output.acme.forged", "x".into())
        .await
        .expect("sent");
    violation(&mut acme_errors, "openshell.output.acme.forged").await;

    let mut chunks = acme
        .subscribe("openshell.output.acme.live-1")
        .await
        .expect("acme subscribes to its own output");
    let mut inbox = acme.subscribe("_INBOX.acme.live").await.expect("sub");
    acme.flush().await.expect("flush");
    let mut job = ExecRequest::code("live-1", "bash", "echo first; sleep 0.3; echo second >&2");
    job.stream = true;
    let payload: bytes::Bytes = serde_json::to_vec(&job).expect("encode").into();
    acme.publish_with_reply("openshell.exec.none.acme", "_INBOX.acme.live", payload)
        .await
        .expect("published");
    let reply = tokio::time::timeout(Duration::from_secs(60), inbox.next())
        .await
        .expect("a result within 60 s")
        .expect("a result");
    let result: ExecResult = serde_json::from_slice(&reply.payload).expect("result");
    assert_eq!(result.status, Verdict::Completed, "{result:?}");
    // Everything was published before the result, so it is already here.
    let (stdout, stderr) = collect_output(&mut chunks, Duration::from_millis(500)).await;
    assert_eq!(stdout, result.stdout.0);
    assert_eq!(stderr, result.stderr.0);
    assert_eq!(stdout, b"first\n");
}

/// Returned files: acme fetches its own stored file through `openshell.files.acme.<id>`;
/// globex can neither ask there nor find acme's file under its own tenant, and no agent may
/// touch the object store itself.
#[tokio::test(flavor = "multi_thread")]
async fn returned_files_are_fetched_only_by_their_tenant() {
    let Some(server) = AccountsServer::start().await else {
        return;
    };
    let _worker = worker(&server, "isolation-files").await;
    let (acme, _acme_errors) = server.connect("agent-acme", "_INBOX.acme").await;
    let (globex, mut globex_errors) = server.connect("agent-globex", "_INBOX.globex").await;
    let subjects = openshell_protocol::Subjects::default();
    let acme_client = openshell_protocol::Client::new(acme, subjects.clone());
    let globex_client = openshell_protocol::Client::new(globex.clone(), subjects);
    let mut job = ExecRequest::code(
        "files-secret",
        "python",
        "open('secret.bin', 'wb').write(b'acme-secret' * 40000)",
    );
    job.outputs = vec![openshell_protocol::OutputPattern::parse("secret.bin").expect("pattern")];
    let result = acme_client
        .exec("none", "acme", &job)
        .await
        .expect("acme's result");
    let outputs = result.outputs.expect("outputs");
    let file = &outputs.files[0];
    assert_eq!(
        file.object.as_deref(),
        Some("acme/files-secret/secret.bin"),
        "{outputs:?}"
    );
    let content = acme_client
        .fetch_file("acme", "files-secret", file)
        .await
        .expect("acme fetches its own file");
    assert_eq!(content, b"acme-secret".repeat(40000));

    globex
        .publish("openshell.files.acme.files-secret", "{}".into())
        .await
        .expect("sent");
    violation(&mut globex_errors, "openshell.files.acme.files-secret").await;
    let error = globex_client
        .fetch_file("globex", "files-secret", file)
        .await
        .expect_err("globex has no such file");
    assert!(error.to_string().contains("not_found"), "{error}");
    let _spy = globex
        .subscribe("$O.OPENSHELL_FILES.>")
        .await
        .expect("sent");
    violation(&mut globex_errors, "$O.OPENSHELL_FILES.>").await;
    globex
        .publish(
            "$JS.API.DIRECT.GET.OBJ_OPENSHELL_FILES.$O.OPENSHELL_FILES.M.x",
            "{}".into(),
        )
        .await
        .expect("sent");
    violation(&mut globex_errors, "$JS.API.DIRECT.GET.OBJ_OPENSHELL_FILES").await;
}
