//! `openshell cancel` stops a running durable job and keeps a queued one from starting;
//! `openshell audit tail --since` replays the audit stream.

mod durable;

use std::time::Duration;

use openshell_protocol::{AuditEventType, Verdict};
use openshell_test_support::Openshell;
use openshell_test_support::nats::NatsServer;

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

#[tokio::test(flavor = "multi_thread")]
async fn cancel_running_and_queued_then_replay_audit() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let worker = durable::worker(&nats, "w1", &[("OPENSHELL_SLOTS", "1")]).await;
    let (connection, client) = durable::client(&nats).await;
    for id in ["running", "queued"] {
        client
            .submit("none", "acme", &durable::sleeper(id, "30"), None)
            .await
            .expect("submit");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !durable::audit_events(&connection)
        .await
        .iter()
        .any(|event| event.job_id == "running" && event.event == AuditEventType::Started)
    {
        assert!(tokio::time::Instant::now() < deadline, "{}", worker.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = nats.url();
    let env = [("NATS_URL", url.as_str())];
    for id in ["queued", "running"] {
        let output = OPENSHELL
            .cli(["cancel", id, "--tenant", "acme"], &env)
            .await;
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("job {id} cancelled\n")
        );
    }
    let ids = ["running".to_string(), "queued".to_string()];
    let results = durable::await_results(&client, "acme", &ids, Duration::from_secs(10)).await;
    assert!(
        results
            .values()
            .all(|result| result.status == Verdict::Cancelled)
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while durable::stream_messages(&connection, "OPENSHELL_JOBS").await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "jobs not acked:\n{}",
            worker.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = durable::audit_events(&connection).await;
    let ran = |id: &str| {
        events
            .iter()
            .any(|event| event.job_id == id && event.event == AuditEventType::Started)
    };
    assert!(ran("running"));
    assert!(!ran("queued"), "a cancelled queued job started");
    let per_subject = durable::results_per_subject(&connection).await;
    assert!(
        per_subject.values().all(|count| *count == 1),
        "{per_subject:?}"
    );

    let tail = OPENSHELL
        .cli(
            [
                "audit",
                "tail",
                "--since",
                "1h",
                "--no-follow",
                "--json",
                "--tenant",
                "acme",
            ],
            &env,
        )
        .await;
    assert_eq!(tail.status.code(), Some(0), "{tail:?}");
    let stdout = String::from_utf8_lossy(&tail.stdout);
    assert_eq!(stdout.lines().count(), events.len(), "{stdout}");
    assert!(stdout.contains("\"job_id\":\"running\""));
    let future = OPENSHELL
        .cli(
            [
                "audit",
                "tail",
                "--since",
                "2999-01-01T00:00:00Z",
                "--no-follow",
            ],
            &env,
        )
        .await;
    assert_eq!(future.status.code(), Some(0));
    assert!(future.stdout.is_empty());
}
