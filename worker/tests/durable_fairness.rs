//! Durable mode shares a worker between tenants: a tenant with a deep queue runs at most its
//! quota at once, so another tenant's single job does not wait behind its queue, and the
//! slow tenant's jobs that were put back meanwhile still run (a put-back job is not counted
//! as a lost worker's attempt).

mod durable;

use std::time::{Duration, Instant};

use openshell_protocol::{ExecRequest, Verdict};
use openshell_test_support::http;
use openshell_test_support::nats::NatsServer;

/// How long each of the slow tenant's jobs runs.
const SLOW_JOB: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread")]
async fn a_deep_queue_does_not_delay_another_tenants_job() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let worker = durable::worker(
        &nats,
        "w1",
        &[("OPENSHELL_SLOTS", "2"), ("OPENSHELL_TENANT_QUOTA", "1")],
    )
    .await;
    let (_connection, client) = durable::client(&nats).await;

    let slow_ids: Vec<String> = (0..100).map(|n| format!("slow-{n}")).collect();
    for id in &slow_ids {
        let job = durable::sleeper(id, &SLOW_JOB.as_secs().to_string());
        client
            .submit("none", "slow", &job, None)
            .await
            .expect("submit");
    }
    // Let the worker start on the slow tenant's queue first.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let submitted = Instant::now();
    let quick = ExecRequest::command("quick", vec!["echo".into(), "quick".into()]);
    client
        .submit("none", "quick", &quick, None)
        .await
        .expect("submit");
    let result = client
        .result("quick", "quick", Duration::from_secs(60))
        .await
        .expect("read result")
        .expect("the quick job has a result");
    let waited = submitted.elapsed();
    assert_eq!(result.status, Verdict::Completed, "{result:?}");
    // The bound of the issue: at most one slow job's duration per worker slot. With the
    // quota the quick job takes the free slot at once; without it, it would wait ~100 s.
    assert!(
        waited < SLOW_JOB,
        "the quick tenant's job waited {waited:?} behind 100 queued slow jobs"
    );

    // The slow tenant kept running one job at a time, and jobs put back for its quota (a
    // nak each, many more than max_deliver = 3 by now) still complete.
    tokio::time::sleep(SLOW_JOB * 3).await;
    let mut finished = Vec::new();
    for id in &slow_ids {
        if let Some(result) = client
            .result("slow", id, Duration::ZERO)
            .await
            .expect("read")
        {
            finished.push(result);
        }
    }
    assert!(
        finished.len() >= 2,
        "only {} slow jobs finished",
        finished.len()
    );
    assert!(
        finished.len() <= 5,
        "{} slow jobs finished in ~7 s: the quota of 1 was not kept",
        finished.len()
    );
    for result in &finished {
        assert_eq!(result.status, Verdict::Completed, "{result:?}");
    }

    // The puts-back show as redeliveries; pending (jobs never delivered yet) is reported,
    // here 0 since every queued job was offered to the worker at least once.
    let (_, metrics) = http::get(&worker.metrics_addr(), "/metrics", "*/*").await;
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}{{pool=\"none\"}} ")))
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert!(value("openshell_jetstream_redeliveries_total") > 0.0);
    assert!(value("openshell_jetstream_pending_messages") >= 0.0);
}
