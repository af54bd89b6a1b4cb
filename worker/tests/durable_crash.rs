//! Kill -9 of durable workers: with 50 jobs in flight every job still ends with exactly one
//! stored result, and a job past `max_deliver` ends `worker_lost`.

mod durable;

use std::time::Duration;

use openshell_protocol::Verdict;
use openshell_test_support::nats::NatsServer;

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

/// With `max_deliver` 1, a job whose worker dies mid-run is not run again: the next delivery
/// stores `worker_lost`, carrying the job's trace context, and that is its one result.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_past_max_deliver_ends_worker_lost() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let envs = [
        ("OPENSHELL_DURABLE_ACK_WAIT", "1s"),
        ("OPENSHELL_DURABLE_MAX_DELIVER", "1"),
    ];
    let mut victim = durable::worker(&nats, "victim", &envs).await;
    let (connection, client) = durable::client(&nats).await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut job = durable::sleeper("lost", "30");
    job.traceparent = Some(trace.to_string());
    client
        .submit("none", "acme", &job, None)
        .await
        .expect("submit");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !durable::audit_events(&connection)
        .await
        .iter()
        .any(|event| {
            event.job_id == "lost" && event.event == openshell_protocol::AuditEventType::Started
        })
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the job never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    victim.kill().await;

    let _second = durable::worker(&nats, "second", &envs).await;
    let results = durable::await_results(
        &client,
        "acme",
        &["lost".to_string()],
        Duration::from_secs(30),
    )
    .await;
    let result = &results["lost"];
    assert_eq!(result.status, Verdict::WorkerLost, "{result:?}");
    assert_eq!(result.worker_id, "second");
    assert_eq!(result.traceparent.as_deref(), Some(trace));
    assert_eq!(
        durable::results_per_subject(&connection)
            .await
            .get("openshell.results.acme.lost"),
        Some(&1)
    );
}
