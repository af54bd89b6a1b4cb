//! Durable mode through the CLI: `submit` prints the id, `result --wait` prints the output,
//! and the same job id submitted twice runs once; a queued job streams its live output too.

mod durable;

use std::time::Duration;

use openshell_protocol::{AuditEventType, ExecRequest};
use openshell_test_support::Openshell;
use openshell_test_support::nats::{NatsServer, collect_output};

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

#[tokio::test(flavor = "multi_thread")]
async fn same_job_id_twice_runs_once() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let _worker = durable::worker(&nats, "w1", &[]).await;
    let url = nats.url();
    let env = [("NATS_URL", url.as_str()), ("SANDBOX_BACKEND", "none")];
    let submit = [
        "submit",
        "--id",
        "twice",
        "--command",
        "sh",
        "-c",
        "echo ran",
    ];
    let first = OPENSHELL.cli(submit, &env).await;
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert_eq!(stdout.lines().last(), Some("twice"));
    let second = OPENSHELL.cli(submit, &env).await;
    assert_eq!(second.status.code(), Some(0));
    // Still queued, or already run: either way it does not run again (checked below). The
    // CLI says which when it can tell; in the moment between the result being stored and the
    // queued copy leaving the stream it cannot, and the worker drops the copy.
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        said.is_empty()
            || said.contains("already queued")
            || said.contains("already has a stored result"),
        "{second:?}"
    );

    let waited = OPENSHELL
        .cli(["result", "twice", "--wait", "20s"], &env)
        .await;
    assert_eq!(
        String::from_utf8_lossy(&waited.stdout),
        "ran\n",
        "{waited:?}"
    );
    assert_eq!(waited.status.code(), Some(0));

    // After it finished, the same id again (its queued copy is gone, so the stream takes it):
    // the worker finds the stored result and does not run it again.
    let (connection, client) = durable::client(&nats).await;
    let jetstream = async_nats::jetstream::new(connection.clone());
    let request = ExecRequest::command("twice", vec!["sh".into(), "-c".into(), "echo ran".into()]);
    jetstream
        .send_publish(
            "openshell.jobs.none.default.twice",
            async_nats::jetstream::message::PublishMessage::build()
                .payload(serde_json::to_vec(&request).expect("encode").into()),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while durable::stream_messages(&connection, "OPENSHELL_JOBS").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "job never acked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = durable::audit_events(&connection)
        .await
        .into_iter()
        .filter(|event| event.job_id == "twice" && event.event == AuditEventType::Started)
        .count();
    assert_eq!(started, 1, "the job ran once");
    let per_subject = durable::results_per_subject(&connection).await;
    assert_eq!(per_subject.get("openshell.results.default.twice"), Some(&1));
    let missing = OPENSHELL.cli(["result", "nope"], &env).await;
    assert_eq!(missing.status.code(), Some(3));
    drop(client);
}

/// Live output in durable mode: a queued job with `stream` has its output published while it
/// runs, exactly the stored result's, before the result is stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_queued_job_streams_its_output_too() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let _worker = durable::worker(&nats, "w-live", &[]).await;
    let (connection, client) = durable::client(&nats).await;
    let mut chunks = connection
        .subscribe("openshell.output.default.queued-live")
        .await
        .expect("sub");
    connection.flush().await.expect("flush");
    let mut request = ExecRequest::command(
        "queued-live",
        vec![
            "sh".into(),
            "-c".into(),
            "echo first; sleep 0.3; echo second".into(),
        ],
    );
    request.stream = true;
    client
        .submit("none", "default", &request, None)
        .await
        .expect("queued");
    let stored = client
        .result("default", "queued-live", Duration::from_secs(60))
        .await
        .expect("read")
        .expect("stored within 60 s");
    let (streamed, _) = collect_output(&mut chunks, Duration::from_millis(500)).await;
    assert_eq!(streamed, stored.stdout.0, "{stored:?}");
    assert_eq!(streamed, b"first\nsecond\n");
}
