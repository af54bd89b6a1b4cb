//! protocol/README.md against live workers: a real nats-server with JetStream, a real durable
//! `openshell worker` on the local backend (pool `none`) and, where Docker is available, one
//! on the Docker backend (pool `docker`). Every request example of the README is sent as shown,
//! byte for byte, and what comes back is compared with the examples shown for it: the reply or
//! stored result (same `id`), the audit events (same `job_id`) and the `$SRV` replies.
//!
//! A request is sent to the pool its result or audit examples name, as tenant `default`: as a
//! core request, or, marked `durable`, queued on its job subject with
//! `Nats-Expected-Last-Subject-Sequence: 0` and read back by direct get; marked `durable cancel`,
//! it is queued while every slot is busy and cancelled by the cancel message alone.
//!
//! Compared: everything deterministic. Ignored: times, worker ids, timestamps, service ids and
//! versions; measured values (`cpu_time_ms`, `peak_memory_bytes`) are compared by presence.
//! When the test does not run as root, the local backend runs jobs as the test's user, so its
//! `processes` entry differs from the README's (workers run as root there) and is skipped.

mod durable;

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

#[path = "../../protocol/tests/readme/mod.rs"]
mod readme;

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::{Client, StatusCode};
use bytes::Bytes;
use futures::StreamExt;
use openshell_protocol::schema::Message;
use openshell_protocol::{AuditEvent, AuditEventType, DurationMs, ExecRequest};
use openshell_test_support::Openshell;
use openshell_test_support::dockerd;
use openshell_test_support::nats::NatsServer;
use readme::{Example, Kind};
use serde_json::{Value, json};

/// The tenant every example runs as.
const TENANT: &str = "default";
/// The worker id the README's examples of pool `none` show.
const LOCAL_WORKER: &str = "worker-a1";
/// The worker id the README's examples of pool `docker` show.
const DOCKER_WORKER: &str = "worker-b2";
/// Slots of the local worker, as its `$SRV.STATS` example shows.
const LOCAL_SLOTS: usize = 2;
/// How long any one step may take before the test fails (not a timing assertion: a bound on
/// waiting for something that must happen).
const PATIENCE: Duration = Duration::from_secs(120);

/// The README's examples, read once per test.
struct Readme {
    examples: Vec<Example>,
}

impl Readme {
    fn load() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/README.md");
        Self {
            examples: readme::examples(&path),
        }
    }

    /// The request examples whose other examples name `pool`.
    fn requests_for(&self, pool: &str) -> Vec<&Example> {
        let requests: Vec<&Example> = self
            .examples
            .iter()
            .filter(|example| example.kind == Kind::Message(Message::Request))
            .collect();
        for request in &requests {
            assert!(
                self.pool_of(request).is_some(),
                "{}: no result or audit example names its pool",
                request.what()
            );
        }
        requests
            .into_iter()
            .filter(|request| self.pool_of(request).as_deref() == Some(pool))
            .collect()
    }

    /// The pool the result or audit examples of `request` name.
    fn pool_of(&self, request: &Example) -> Option<String> {
        self.shown_for(request)
            .filter_map(|example| example.value()["pool"].as_str().map(str::to_string))
            .find(|pool| !pool.is_empty())
    }

    /// The result and audit examples of `request` (same id).
    fn shown_for<'a>(&'a self, request: &Example) -> impl Iterator<Item = &'a Example> {
        let id = readme::job_id(request);
        self.examples.iter().filter(move |example| {
            matches!(
                example.message(),
                Some(Message::Result) | Some(Message::Audit)
            ) && readme::job_id(example) == id
        })
    }

    /// The result example of `request`, if the README shows one.
    fn result_for(&self, request: &Example) -> Option<&Example> {
        self.shown_for(request)
            .find(|example| example.message() == Some(Message::Result))
    }

    /// The audit examples of `pool`.
    fn audits_for(&self, pool: &str) -> Vec<&Example> {
        self.examples
            .iter()
            .filter(|example| {
                example.message() == Some(Message::Audit) && example.value()["pool"] == pool
            })
            .collect()
    }

    /// The one example of `kind`.
    fn only(&self, kind: Kind) -> &Example {
        let mut found = self.examples.iter().filter(|example| example.kind == kind);
        let example = found
            .next()
            .unwrap_or_else(|| panic!("README.md has no {kind:?} example"));
        assert!(
            found.next().is_none(),
            "README.md has two {kind:?} examples"
        );
        example
    }
}

/// A client of tenant `default`: replies come to `_INBOX.default.…`, as for an agent confined
/// by deploy/nats/accounts.conf.
async fn agent(nats: &NatsServer) -> Client {
    async_nats::ConnectOptions::new()
        .custom_inbox_prefix(format!("_INBOX.{TENANT}"))
        .connect(nats.url())
        .await
        .expect("the agent connects")
}

/// `actual` equals `shown` in everything deterministic.
fn assert_shown(actual: &Value, shown: &Example, skip: &[&str]) {
    let mut actual = actual.clone();
    let mut shown_value = shown.value();
    for value in [&mut actual, &mut shown_value] {
        normalize(value, skip);
    }
    assert!(
        actual == shown_value,
        "{} differs from what the worker sent.\nREADME:\n{}\nworker (normalized):\n{}",
        shown.what(),
        serde_json::to_string_pretty(&shown_value).unwrap_or_default(),
        serde_json::to_string_pretty(&actual).unwrap_or_default()
    );
}

/// Drops what varies from run to run, and turns measured values into their presence.
fn normalize(value: &mut Value, skip: &[&str]) {
    let Some(object) = value.as_object_mut() else {
        return;
    };
    for key in [
        "wall_time_ms",
        "queue_time_ms",
        "worker_id",
        "timestamp",
        "chain",
        "seq",
        "prev",
    ] {
        object.remove(key);
    }
    for key in ["cpu_time_ms", "peak_memory_bytes"] {
        if object.contains_key(key) {
            object.insert(key.into(), json!("present"));
        }
    }
    for path in skip {
        remove_path(value, path);
    }
    if let Some(usage) = value.get_mut("usage") {
        normalize(usage, &[]);
    }
}

fn remove_path(value: &mut Value, path: &str) {
    let (parent, key) = path.rsplit_once('/').unwrap_or(("", path));
    let parent = if parent.is_empty() {
        Some(value)
    } else {
        value.pointer_mut(&format!("/{parent}"))
    };
    if let Some(object) = parent.and_then(Value::as_object_mut) {
        object.remove(key);
    }
}

/// What the local backend's report depends on besides the job: the user jobs run as.
fn local_skips() -> Vec<&'static str> {
    if nix::unistd::Uid::effective().is_root() {
        Vec::new()
    } else {
        eprintln!("not root: the local backend's `processes` entry is not compared");
        vec!["enforcement/processes"]
    }
}

/// Sends `request` as shown, as a core request to `pool`, and returns the reply.
async fn send_core(client: &Client, pool: &str, request: &Example) -> Value {
    let subject = format!("openshell.exec.{pool}.{TENANT}");
    let reply = client
        .send_request(
            subject,
            async_nats::Request::new()
                .payload(Bytes::from(request.json.clone()))
                .timeout(Some(PATIENCE)),
        )
        .await
        .unwrap_or_else(|error| panic!("{}: no reply: {error}", request.what()));
    serde_json::from_slice(&reply.payload).expect("the reply is JSON")
}

/// The job id of a request example (an `invalid` one is read without decoding).
fn id_of(request: &Example) -> String {
    readme::job_id(request).unwrap_or_else(|| panic!("{}: no id", request.what()))
}

/// Queues `payload` as job `id` of pool `none`, optionally with `Openshell-Reply-To`.
async fn queue(
    jetstream: &async_nats::jetstream::Context,
    id: &str,
    payload: Bytes,
    reply_to: Option<&str>,
) -> Result<(), async_nats::jetstream::context::PublishError> {
    let mut message = PublishMessage::build()
        .payload(payload)
        .expected_last_subject_sequence(0);
    if let Some(reply_to) = reply_to {
        message = message.header("Openshell-Reply-To", reply_to);
    }
    jetstream
        .send_publish(format!("openshell.jobs.none.{TENANT}.{id}"), message)
        .await?
        .await
        .map(drop)
}

/// The stored result of `id` by direct get, or `None` on the 404 that means "not stored yet".
async fn direct_get(client: &Client, id: &str) -> Option<Value> {
    let subject = format!("$JS.API.DIRECT.GET.OPENSHELL_RESULTS.openshell.results.{TENANT}.{id}");
    let reply = client
        .request(subject, Bytes::new())
        .await
        .expect("the direct get is answered");
    if reply.status == Some(StatusCode::NOT_FOUND) {
        return None;
    }
    assert_eq!(reply.status, None, "direct get of {id}: {reply:?}");
    Some(serde_json::from_slice(&reply.payload).expect("a stored result is JSON"))
}

/// The next message on `subscription`, which must come (job `id`, on `what`).
async fn next_within(
    subscription: &mut async_nats::Subscriber,
    id: &str,
    what: &str,
) -> async_nats::Message {
    tokio::time::timeout(PATIENCE, subscription.next())
        .await
        .unwrap_or_else(|_| panic!("{id}: nothing on {what}"))
        .unwrap_or_else(|| panic!("{id}: the subscription to {what} closed"))
}

/// Waits until `id` has a stored result, and returns it.
async fn await_stored(client: &Client, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(result) = direct_get(client, id).await {
            return result;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no result stored for {id}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the audit stream holds an event of `job_id` and type `event`, and returns the
/// first such event.
async fn await_event(operator: &Client, job_id: &str, event: AuditEventType) -> AuditEvent {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let found = durable::audit_events(operator)
            .await
            .into_iter()
            .find(|audited| {
                audited.job_id == job_id && audited.tenant == TENANT && audited.event == event
            });
        if let Some(found) = found {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no `{event}` audit event of {job_id}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the jobs stream is empty: every queued job has its result stored and was acked.
async fn await_queue_empty(operator: &Client) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while durable::stream_messages(operator, "OPENSHELL_JOBS").await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "OPENSHELL_JOBS still holds jobs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `$SRV.INFO` and `$SRV.STATS` replies of the only worker on the server.
async fn check_service_examples(client: &Client, readme: &Readme) {
    let info = client
        .request("$SRV.INFO.openshell", Bytes::new())
        .await
        .expect("a worker answers $SRV.INFO");
    let info: Value = serde_json::from_slice(&info.payload).expect("JSON");
    assert_shown(&info, readme.only(Kind::SrvInfo), &["id", "version"]);
    let stats = client
        .request("$SRV.STATS.openshell", Bytes::new())
        .await
        .expect("a worker answers $SRV.STATS");
    let mut stats: Value = serde_json::from_slice(&stats.payload).expect("JSON");
    let mut shown = readme.only(Kind::SrvStats).clone();
    let mut shown_value = shown.value();
    for value in [&mut stats, &mut shown_value] {
        let endpoints = value["endpoints"].as_array_mut().expect("endpoints");
        for endpoint in endpoints {
            let endpoint = endpoint.as_object_mut().expect("an endpoint");
            for key in [
                "num_requests",
                "num_errors",
                "processing_time",
                "average_processing_time",
                "last_error",
            ] {
                endpoint.remove(key);
            }
            if let Some(data) = endpoint.get_mut("data").and_then(Value::as_object_mut) {
                data.remove("version");
            }
        }
    }
    shown.json = shown_value.to_string();
    assert_shown(&stats, &shown, &["id", "version", "started"]);
}

/// Every core request example of pool `none`, and every durable one, against a durable worker on
/// the local backend; then every audit example of pool `none`.
#[tokio::test(flavor = "multi_thread")]
async fn readme_examples_on_the_local_backend() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let readme = Readme::load();
    let slots = LOCAL_SLOTS.to_string();
    let worker = durable::worker(&nats, LOCAL_WORKER, &[("OPENSHELL_SLOTS", slots.as_str())]).await;
    let client = agent(&nats).await;
    let operator = async_nats::connect(nats.url()).await.expect("connect");
    let jetstream = async_nats::jetstream::new(client.clone());
    let skips = local_skips();
    check_service_examples(&client, &readme).await;

    let requests = readme.requests_for("none");
    assert!(
        !requests.is_empty(),
        "README.md has no example on pool none"
    );
    for request in requests.iter().filter(|request| !request.has("durable")) {
        let reply = send_core(&client, "none", request).await;
        if let Some(shown) = readme.result_for(request) {
            assert_shown(&reply, shown, &skips);
        }
    }
    for chunk in readme
        .examples
        .iter()
        .filter(|example| example.kind == Kind::Message(Message::Output))
    {
        check_output(&client, &readme, chunk).await;
    }
    for fetch in readme
        .examples
        .iter()
        .filter(|example| example.kind == Kind::Message(Message::FileFetch))
    {
        check_fetch(&client, &readme, fetch).await;
    }
    for request in requests
        .iter()
        .filter(|request| request.has("durable") && !request.has("cancel"))
    {
        queue_and_read(&client, &operator, &jetstream, &readme, request, &skips).await;
    }
    let cancelled: Vec<&&Example> = requests
        .iter()
        .filter(|request| request.has("cancel"))
        .collect();
    if !cancelled.is_empty() {
        cancel_while_queued(&client, &operator, &jetstream, &readme, &cancelled, &skips).await;
    }
    for shown in readme.audits_for("none") {
        let event: AuditEvent = serde_json::from_str(&shown.json).expect("an audit event");
        let live = await_event(&operator, &event.job_id, event.event).await;
        let live = serde_json::to_value(&live).expect("JSON");
        assert_shown(&live, shown, &skips);
    }
    drop(worker);
}

/// A live output example: the request example with its id, sent again with `"stream": true`
/// (it ended, so the id is free), publishes that chunk first on its output subject.
async fn check_output(client: &Client, readme: &Readme, chunk: &Example) {
    let shown = chunk.value();
    let id = shown["id"].as_str().expect("a chunk's id").to_string();
    let request = readme
        .examples
        .iter()
        .find(|example| {
            example.kind == Kind::Message(Message::Request)
                && readme::job_id(example).as_deref() == Some(id.as_str())
        })
        .unwrap_or_else(|| panic!("{}: no request example has the id `{id}`", chunk.what()));
    let mut streamed = request.value();
    streamed["stream"] = json!(true);
    let mut chunks = client
        .subscribe(format!("openshell.output.{TENANT}.{id}"))
        .await
        .expect("subscribe to the output");
    client.flush().await.expect("flush");
    let pool = readme
        .pool_of(request)
        .unwrap_or_else(|| "none".to_string());
    client
        .send_request(
            format!("openshell.exec.{pool}.{TENANT}"),
            async_nats::Request::new()
                .payload(Bytes::from(streamed.to_string()))
                .timeout(Some(PATIENCE)),
        )
        .await
        .unwrap_or_else(|error| panic!("{}: no reply: {error}", chunk.what()));
    let first = next_within(&mut chunks, &id, "its live output subject").await;
    let live: Value = serde_json::from_slice(&first.payload).expect("a JSON chunk");
    assert_shown(&live, chunk, &[]);
}

/// A fetch example, sent as shown for the job whose result example lists a stored file at its
/// path (that job ran just before): the reply carries the file's size and SHA-256 as the
/// result shows them, and its bytes from the offset.
async fn check_fetch(client: &Client, readme: &Readme, fetch: &Example) {
    use openshell_protocol::outputs::{FILE_OFFSET_HEADER, FILE_SHA256_HEADER, FILE_SIZE_HEADER};
    use openshell_protocol::{ExecResult, FileFetch};
    let asked: FileFetch = serde_json::from_str(&fetch.json).expect("a file fetch");
    let (id, file) = readme
        .examples
        .iter()
        .filter(|example| example.kind == Kind::Message(Message::Result))
        .filter_map(|example| serde_json::from_str::<ExecResult>(&example.json).ok())
        .find_map(|result| {
            let file = result
                .outputs?
                .files
                .into_iter()
                .find(|file| file.path == asked.path && file.object.is_some())?;
            Some((result.id, file))
        })
        .unwrap_or_else(|| {
            panic!(
                "{}: no result example stores `{}`",
                fetch.what(),
                asked.path
            )
        });
    let reply = client
        .request(
            format!("openshell.files.{TENANT}.{id}"),
            Bytes::from(fetch.json.clone()),
        )
        .await
        .unwrap_or_else(|error| panic!("{}: no reply: {error}", fetch.what()));
    let headers = reply.headers.expect("headers");
    let header = |name: &str| headers.get(name).map(|value| value.as_str().to_string());
    assert_eq!(
        header(FILE_SIZE_HEADER),
        Some(file.size.to_string()),
        "{}",
        fetch.what()
    );
    assert_eq!(header(FILE_SHA256_HEADER), Some(file.sha256.clone()));
    assert_eq!(header(FILE_OFFSET_HEADER), Some(asked.offset.to_string()));
    assert!(!reply.payload.is_empty(), "{}: an empty part", fetch.what());
}

/// A durable request example: queued on its job subject with `Openshell-Reply-To`, its result
/// awaited live, read by direct get and received on the reply subject, all three the example
/// shown; queued again once it is stored, it is not run again (`duplicate_job`).
async fn queue_and_read(
    client: &Client,
    operator: &Client,
    jetstream: &async_nats::jetstream::Context,
    readme: &Readme,
    request: &Example,
    skips: &[&str],
) {
    let id = id_of(request);
    assert_eq!(
        direct_get(client, &id).await,
        None,
        "{id} has a result before it was queued"
    );
    let reply_to = format!("_INBOX.{TENANT}.reply-to.{id}");
    let mut replies = client.subscribe(reply_to.clone()).await.expect("sub");
    let mut live = client
        .subscribe(format!("openshell.results.{TENANT}.{id}"))
        .await
        .expect("sub");
    client.flush().await.expect("flush");
    let payload = Bytes::from(request.json.clone());
    queue(jetstream, &id, payload.clone(), Some(&reply_to))
        .await
        .unwrap_or_else(|error| panic!("{}: not queued: {error}", request.what()));
    let published = next_within(&mut live, &id, "the result subject").await;
    let replied = next_within(&mut replies, &id, "Openshell-Reply-To").await;
    let stored = await_stored(client, &id).await;
    let published: Value = serde_json::from_slice(&published.payload).expect("JSON");
    let replied: Value = serde_json::from_slice(&replied.payload).expect("JSON");
    assert_eq!(published, stored, "{id}: live and stored results differ");
    assert_eq!(
        replied, stored,
        "{id}: the reply and the stored result differ"
    );
    let shown = readme
        .result_for(request)
        .unwrap_or_else(|| panic!("{}: no result example", request.what()));
    assert_shown(&stored, shown, skips);

    // Queued again once it left the queue: taken, not run, audited as a duplicate.
    await_queue_empty(operator).await;
    queue(jetstream, &id, payload, None)
        .await
        .expect("queued again");
    let duplicate = await_event(operator, &id, AuditEventType::Rejected).await;
    assert_eq!(
        duplicate.error.map(|error| error.kind.to_string()),
        Some("duplicate_job".to_string())
    );
    let started = durable::audit_events(operator)
        .await
        .into_iter()
        .filter(|event| event.job_id == id && event.event == AuditEventType::Started)
        .count();
    assert_eq!(started, 1, "{id} ran again");
    assert_eq!(direct_get(client, &id).await, Some(stored));
}

/// Durable `cancel` examples: queued while every slot is busy (a 404 on direct get, and queued
/// again it is refused as "wrong last sequence"), cancelled by the cancel message alone, their
/// stored `cancelled` result the example shown; their `rejected` audit events are compared with
/// the others.
async fn cancel_while_queued(
    client: &Client,
    operator: &Client,
    jetstream: &async_nats::jetstream::Context,
    readme: &Readme,
    requests: &[&&Example],
    skips: &[&str],
) {
    let blockers: Vec<String> = (1..=LOCAL_SLOTS).map(|n| format!("blocker-{n}")).collect();
    for blocker in &blockers {
        let mut job = ExecRequest::command(blocker, vec!["sleep".into(), "600".into()]);
        job.limits.timeout = Some(DurationMs::secs(600));
        let payload = serde_json::to_vec(&job).expect("JSON");
        queue(jetstream, blocker, payload.into(), None)
            .await
            .expect("blocker queued");
    }
    for blocker in &blockers {
        await_event(operator, blocker, AuditEventType::Started).await;
    }
    for request in requests {
        let id = id_of(request);
        let payload = Bytes::from(request.json.clone());
        queue(jetstream, &id, payload.clone(), None)
            .await
            .unwrap_or_else(|error| panic!("{}: not queued: {error}", request.what()));
        assert_eq!(direct_get(client, &id).await, None, "{id} stored too early");
        let again = queue(jetstream, &id, payload, None).await;
        assert_eq!(
            again.map_err(|error| error.kind()),
            Err(PublishErrorKind::WrongLastSequence),
            "{id} was queued twice"
        );
        client
            .publish(format!("openshell.cancel.{TENANT}.{id}"), Bytes::new())
            .await
            .expect("cancel");
        let stored = await_stored(client, &id).await;
        let shown = readme
            .result_for(request)
            .unwrap_or_else(|| panic!("{}: no result example", request.what()));
        assert_shown(&stored, shown, skips);
    }
    for blocker in &blockers {
        client
            .publish(format!("openshell.cancel.{TENANT}.{blocker}"), Bytes::new())
            .await
            .expect("cancel");
    }
    for request in requests {
        let id = id_of(request);
        await_event(operator, &id, AuditEventType::Rejected).await;
        let ran = durable::audit_events(operator)
            .await
            .into_iter()
            .any(|event| event.job_id == id && event.event == AuditEventType::Started);
        assert!(!ran, "{id} ran after it was cancelled");
    }
}

/// Every request example of pool `docker` against a worker on the Docker backend.
#[tokio::test(flavor = "multi_thread")]
async fn readme_examples_on_the_docker_backend() {
    let readme = Readme::load();
    let requests = readme.requests_for("docker");
    if requests.is_empty() || !dockerd::available() {
        return;
    }
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let image = dockerd::image();
    let worker = OPENSHELL
        .worker(&[
            ("NATS_URL", url.as_str()),
            ("SANDBOX_BACKEND", "docker"),
            ("SANDBOX_DOCKER_IMAGE", image.as_str()),
            ("OPENSHELL_WORKER_ID", DOCKER_WORKER),
        ])
        .await;
    let client = agent(&nats).await;
    for request in requests {
        assert!(
            !request.has("durable"),
            "{}: durable examples run on pool none",
            request.what()
        );
        let reply = send_core(&client, "docker", request).await;
        if let Some(shown) = readme.result_for(request) {
            assert_shown(&reply, shown, &[]);
        }
    }
    assert!(
        readme.audits_for("docker").is_empty(),
        "audit examples of pool docker are not checked: add them to this test"
    );
    drop(worker);
}

/// The session examples, in order, against a Docker worker: each `session-open` is sent as
/// shown and answered as the next `session-opened` or `session-error` example shows; each
/// `session-close` closes the last opened session and is answered as the next
/// `session-closed` shows.
#[tokio::test(flavor = "multi_thread")]
async fn readme_session_examples_on_the_docker_backend() {
    let readme = Readme::load();
    let session_kinds = [
        Message::SessionOpen,
        Message::SessionOpened,
        Message::SessionClose,
        Message::SessionClosed,
        Message::SessionError,
    ];
    let examples: Vec<&Example> = readme
        .examples
        .iter()
        .filter(|example| {
            example
                .message()
                .is_some_and(|message| session_kinds.contains(&message))
        })
        .collect();
    if examples.is_empty() || !dockerd::available() {
        return;
    }
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let image = dockerd::image();
    let worker = OPENSHELL
        .worker(&[
            ("NATS_URL", url.as_str()),
            ("SANDBOX_BACKEND", "docker"),
            ("SANDBOX_DOCKER_IMAGE", image.as_str()),
            ("OPENSHELL_WORKER_ID", DOCKER_WORKER),
        ])
        .await;
    let client = agent(&nats).await;
    let varying = [
        "session",
        "subject",
        "close_subject",
        "expires_at",
        "lifetime_ms",
    ];
    let mut close_subject = None;
    let mut examples = examples.into_iter();
    while let Some(sent) = examples.next() {
        let subject = match sent.message() {
            Some(Message::SessionOpen) => format!("openshell.session.open.docker.{TENANT}"),
            Some(Message::SessionClose) => close_subject
                .clone()
                .unwrap_or_else(|| panic!("{}: no session opened before it", sent.what())),
            _ => panic!("{}: not after an open or close example", sent.what()),
        };
        let reply = client
            .request(subject, Bytes::from(sent.json.clone().into_bytes()))
            .await
            .unwrap_or_else(|error| panic!("{}: {error}", sent.what()));
        let actual: Value = serde_json::from_slice(&reply.payload).expect("a JSON answer");
        let shown = examples
            .next()
            .unwrap_or_else(|| panic!("{}: no answer example after it", sent.what()));
        if shown.message() == Some(Message::SessionOpened) {
            close_subject = actual["close_subject"].as_str().map(str::to_string);
        }
        assert_shown(&actual, shown, &varying);
    }
    drop(worker);
}
