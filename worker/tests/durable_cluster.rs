//! Durable mode on a 3-node NATS cluster with JetStream, streams and buckets at 3 replicas:
//! two workers, each given all three URLs (the client picks one at random, so they may share a
//! node), run 300 short jobs while the node leading
//! `OPENSHELL_JOBS` is killed with SIGKILL mid-run. Every job gets exactly one stored result,
//! every job's `received` is stored before its `started`, and jobs keep flowing once the node
//! is back. Every job's code runs exactly once, as the workers' completed-jobs metric counts
//! it; jobs whose `started` event was stored more than once are printed.

mod durable;

use std::collections::HashMap;
use std::time::Duration;

use openshell_protocol::{AuditEvent, AuditEventType, ExecRequest};
use openshell_test_support::Openshell;
use openshell_test_support::http;
use openshell_test_support::nats::cluster::NatsCluster;
use openshell_worker::durable::client::DurableClient;

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

/// Jobs submitted before and during the node loss.
const JOBS: usize = 300;

#[tokio::test(flavor = "multi_thread")]
async fn losing_the_leader_node_loses_no_job_and_stores_one_result_each() {
    let Some(mut cluster) = NatsCluster::start(3).await else {
        return;
    };
    let mut workers = Vec::new();
    for (index, id) in [(0, "cluster-a"), (1, "cluster-b")] {
        let urls = cluster.urls_from(index);
        workers.push(
            OPENSHELL
                .worker(&[
                    ("NATS_URL", urls.as_str()),
                    ("SANDBOX_BACKEND", "none"),
                    ("OPENSHELL_DURABLE", "true"),
                    ("OPENSHELL_DURABLE_REPLICAS", "3"),
                    ("OPENSHELL_WORKER_ID", id),
                    ("LOG_LEVEL", "info"),
                ])
                .await,
        );
    }
    let client_urls: Vec<String> = (0..3).map(|index| cluster.url(index)).collect();
    let connection = async_nats::connect(client_urls.clone())
        .await
        .expect("client connects");
    let client = DurableClient::new(connection.clone(), "openshell");
    let jetstream = async_nats::jetstream::new(connection.clone());
    let mut jobs = jetstream
        .get_stream("OPENSHELL_JOBS")
        .await
        .expect("stream");
    assert_eq!(jobs.info().await.expect("info").config.num_replicas, 3);

    let before = completed_runs(&workers).await;
    let ids: Vec<String> = (0..JOBS).map(|n| format!("c{n}")).collect();
    let mut killed = None;
    for (n, id) in ids.iter().enumerate() {
        let request = ExecRequest::command(id.clone(), vec!["true".into()]);
        submit(&client, &request).await;
        if n == JOBS / 3 {
            let leader = jobs
                .info()
                .await
                .expect("info")
                .cluster
                .clone()
                .and_then(|cluster| cluster.leader)
                .expect("the jobs stream has a leader");
            let index = cluster.index_of(&leader).expect("a node of ours");
            cluster.kill(index);
            killed = Some(index);
        }
    }
    let results = durable::await_results(&client, "default", &ids, Duration::from_secs(240)).await;
    assert_eq!(results.len(), JOBS);
    // Runs of the code, as the workers count completed jobs: exactly one per job. (The audit
    // trail cannot say it here: a `finished` event published during the election may not be
    // stored, and a job may have a start audited that did not run before the one that did.)
    let ran = completed_runs(&workers).await - before;
    if ran != JOBS as f64 {
        for worker in &workers {
            let logs = worker.logs();
            let notable: Vec<&str> = logs
                .lines()
                .filter(|line| {
                    line.contains("WARN") || line.contains("ERROR") || line.contains("already")
                })
                .take(60)
                .collect();
            eprintln!("worker log (warnings):\n{}", notable.join("\n"));
        }
    }
    assert_eq!(ran, JOBS as f64, "the code of {JOBS} jobs ran {ran} times");

    let events = durable::audit_events(&connection).await;
    let mut by_job: HashMap<&str, Vec<&AuditEvent>> = HashMap::new();
    for event in &events {
        by_job.entry(event.job_id.as_str()).or_default().push(event);
    }
    let mut restarted = Vec::new();
    for id in &ids {
        let seen = by_job.get(id.as_str()).cloned().unwrap_or_default();
        let kinds: Vec<AuditEventType> = seen.iter().map(|event| event.event).collect();
        let started = kinds
            .iter()
            .filter(|event| **event == AuditEventType::Started)
            .count();
        if started > 1 {
            restarted.push(id.clone());
        }
        let received = kinds
            .iter()
            .position(|event| *event == AuditEventType::Received);
        let first_started = kinds
            .iter()
            .position(|event| *event == AuditEventType::Started);
        assert!(received < first_started, "job {id}: {kinds:?}");
    }
    eprintln!(
        "jobs whose start was audited more than once (their code ran once): {} {restarted:?}",
        restarted.len()
    );

    // The node comes back, and jobs keep flowing.
    cluster
        .start_again(killed.expect("a node was killed"))
        .await;
    let after: Vec<String> = (0..10).map(|n| format!("after{n}")).collect();
    for id in &after {
        submit(
            &client,
            &ExecRequest::command(id.clone(), vec!["true".into()]),
        )
        .await;
    }
    durable::await_results(&client, "default", &after, Duration::from_secs(120)).await;
    drop(workers);
}

/// Queues `request`, retrying while the cluster elects new leaders.
async fn submit(client: &DurableClient, request: &ExecRequest) {
    for attempt in 0.. {
        match client.submit("none", "default", request, None).await {
            Ok(_) => return,
            Err(error) if attempt < 60 => {
                eprintln!("submit {} failed ({error}); retrying", request.id);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => panic!("submit {} kept failing: {error}", request.id),
        }
    }
}

/// Completed jobs of pool `none`, all workers together, from their metrics.
async fn completed_runs(workers: &[openshell_test_support::WorkerProcess]) -> f64 {
    let mut total = 0.0;
    for worker in workers {
        let (_, metrics) = http::get(&worker.metrics_addr(), "/metrics", "*/*").await;
        total += metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix(
                    "openshell_jobs_total{pool=\"none\",backend=\"none\",verdict=\"completed\"} ",
                )
            })
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no completed-jobs series:\n{metrics}"));
    }
    total
}
