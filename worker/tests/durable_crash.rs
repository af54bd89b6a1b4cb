//! Kill -9 one of two durable workers while 50 jobs are in flight: every job still ends with
//! exactly one stored result.

mod durable;
mod support;

use std::time::Duration;

use openshell_protocol::Verdict;
use support::nats::NatsServer;

#[tokio::test(flavor = "multi_thread")]
async fn killed_worker_loses_no_job() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let envs = [
        ("OPENSHELL_SLOTS", "25"),
        ("OPENSHELL_DURABLE_ACK_WAIT", "2s"),
    ];
    let mut victim = durable::worker(&nats, "victim", &envs).await;
    let survivor = durable::worker(&nats, "survivor", &envs).await;
    let (connection, client) = durable::client(&nats).await;
    let ids: Vec<String> = (0..50).map(|n| format!("crash-{n}")).collect();
    for id in &ids {
        let submitted = client
            .submit("none", "acme", &durable::sleeper(id, "1.5"), None)
            .await
            .expect("submit");
        assert!(!submitted.duplicate);
    }
    // Let both workers take jobs, then kill one mid-run.
    tokio::time::sleep(Duration::from_millis(700)).await;
    victim.kill().await;

    let results = durable::await_results(&client, "acme", &ids, Duration::from_secs(40)).await;
    assert_eq!(results.len(), 50);
    for (id, result) in &results {
        assert_eq!(result.status, Verdict::Completed, "{id}: {result:?}");
    }
    // Each worker holds at most 25, so the victim had taken at least 25 when it died: the
    // survivor ran those again.
    let by_survivor = results
        .values()
        .filter(|result| result.worker_id == "survivor")
        .count();
    assert_eq!(by_survivor, 50, "victim log:\n{}", victim.logs());
    let per_subject = durable::results_per_subject(&connection).await;
    assert_eq!(per_subject.len(), 50);
    assert!(
        per_subject.values().all(|count| *count == 1),
        "{per_subject:?}"
    );
    assert_eq!(
        durable::stream_messages(&connection, "OPENSHELL_JOBS").await,
        0,
        "every job acked"
    );
    drop(survivor);
}
