//! Restart nats-server (JetStream on disk) during a run of 200 durable jobs: none is lost,
//! and the workers reconnect by themselves.

mod durable;

use std::time::Duration;

use openshell_test_support::nats::NatsServer;

#[tokio::test(flavor = "multi_thread")]
async fn nats_restart_loses_no_job() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let envs = [
        ("OPENSHELL_SLOTS", "8"),
        ("OPENSHELL_DURABLE_ACK_WAIT", "3s"),
        ("OPENSHELL_DURABLE_MAX_DELIVER", "20"),
    ];
    let first = durable::worker(&nats, "w1", &envs).await;
    let second = durable::worker(&nats, "w2", &envs).await;
    let (connection, client) = durable::client(&nats).await;
    let ids: Vec<String> = (0..200).map(|n| format!("restart-{n}")).collect();
    for id in &ids {
        client
            .submit("none", "acme", &durable::sleeper(id, "0.05"), None)
            .await
            .expect("submit");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while durable::stream_messages(&connection, "OPENSHELL_RESULTS").await < 30 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress before the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nats.restart().await;

    let results = durable::await_results(&client, "acme", &ids, Duration::from_secs(90)).await;
    assert_eq!(results.len(), 200);
    let per_subject = durable::results_per_subject(&connection).await;
    assert_eq!(per_subject.len(), 200);
    assert!(per_subject.values().all(|count| *count == 1));
    let done = results
        .values()
        .filter(|result| result.status == openshell_protocol::Verdict::Completed)
        .count();
    assert_eq!(done, 200, "w1:\n{}\nw2:\n{}", first.logs(), second.logs());
}
