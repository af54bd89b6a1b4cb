//! Health that tells the truth, tried with faults: a worker whose backend cannot run anything
//! stays out of its pool (core: out of the queue group; durable: pulls nothing), a short
//! Docker or sshd outage leaves queued durable jobs waiting instead of failing them, and a
//! worker without its NATS subscriptions refuses to start. Needs nats-server, dockerd with
//! the sandbox image, and sshd.

mod durable;

use std::time::Duration;

use openshell_protocol::{Client, ExecRequest, Verdict};
use openshell_test_support::dockerd::{self, PrivateDockerd};
use openshell_test_support::nats::NatsServer;
use openshell_test_support::nats::accounts::AccountsServer;
use openshell_test_support::sshd::Sshd;
use openshell_test_support::{Openshell, WorkerProcess, http};
use openshell_worker::durable::client::DurableClient;

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

/// A durable docker worker named `id` on `nats`, with `extra` variables.
async fn docker_worker(nats: &NatsServer, id: &str, extra: &[(&str, &str)]) -> WorkerProcess {
    let url = nats.url();
    let image = dockerd::image();
    let docker_host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let mut envs = vec![
        ("NATS_URL", url.as_str()),
        ("SANDBOX_BACKEND", "docker"),
        ("SANDBOX_DOCKER_IMAGE", image.as_str()),
        ("OPENSHELL_DURABLE", "true"),
        ("OPENSHELL_WORKER_ID", id),
        ("OPENSHELL_SLOTS", "4"),
    ];
    if !docker_host.is_empty() {
        envs.push(("DOCKER_HOST", docker_host.as_str()));
    }
    envs.extend_from_slice(extra);
    OPENSHELL.worker(&envs).await
}

fn job(id: &str) -> ExecRequest {
    ExecRequest::command(id, vec!["echo".into(), id.into()])
}

/// Queues `count` echo jobs named `<prefix>-<n>` on `pool`; returns their ids.
async fn queue(client: &DurableClient, pool: &str, prefix: &str, count: usize) -> Vec<String> {
    let ids: Vec<String> = (0..count).map(|n| format!("{prefix}-{n}")).collect();
    for id in &ids {
        client
            .submit(pool, "default", &job(id), None)
            .await
            .expect("submit");
    }
    ids
}

/// Every job in `ids` completes with its own output (after the outage), none as an error.
async fn assert_all_complete(client: &DurableClient, ids: &[String], worker: &WorkerProcess) {
    let results = durable::await_results(client, "default", ids, Duration::from_secs(120)).await;
    for (id, result) in &results {
        assert_eq!(
            result.status,
            Verdict::Completed,
            "{id}: {result:?}\n{}",
            worker.logs()
        );
        assert_eq!(result.stdout.to_text_lossy(), format!("{id}\n"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_image_is_missing_takes_no_job() {
    if !dockerd::available() {
        return;
    }
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let healthy = docker_worker(&nats, "healthy", &[]).await;
    let broken = docker_worker(
        &nats,
        "broken",
        &[("SANDBOX_DOCKER_IMAGE", "openshell-missing-image:none")],
    )
    .await;
    let (status, _) = http::get(&broken.metrics_addr(), "/readyz", "*/*").await;
    assert_eq!(status, 503, "the broken worker says it is ready");
    let (status, _) = http::get(&healthy.metrics_addr(), "/readyz", "*/*").await;
    assert_eq!(status, 200, "{}", healthy.logs());

    let client = Client::connect(&nats.url()).await.expect("client");
    let core = (0..20).map(|n| {
        let client = client.clone();
        async move {
            client
                .exec("docker", "default", &job(&format!("core-{n}")))
                .await
        }
    });
    for result in futures::future::join_all(core).await {
        let result = result.expect("every core job is answered");
        assert_eq!(result.status, Verdict::Completed, "{result:?}");
        assert_eq!(result.worker_id, "healthy", "{result:?}");
    }
    let (_, durable) = durable::client(&nats).await;
    let ids = queue(&durable, "docker", "queued", 20).await;
    let results = durable::await_results(&durable, "default", &ids, Duration::from_secs(120)).await;
    for result in results.values() {
        assert_eq!(result.status, Verdict::Completed, "{result:?}");
        assert_eq!(result.worker_id, "healthy", "{result:?}");
    }
    assert!(
        !broken.logs().contains("job finished"),
        "the broken worker ran a job:\n{}",
        broken.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_jobs_wait_out_a_docker_outage() {
    if !dockerd::available() {
        return;
    }
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let mut daemon = PrivateDockerd::start().await;
    let host = daemon.host();
    let worker = docker_worker(&nats, "outage", &[("DOCKER_HOST", host.as_str())]).await;
    daemon.stop().await;
    let (_, client) = durable::client(&nats).await;
    let ids = queue(&client, "docker", "outage", 30).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    daemon.start_again().await;
    assert_all_complete(&client, &ids, &worker).await;
}

/// A worker whose NATS user may not subscribe to its pools' subjects refuses to start, naming
/// the refusal, instead of looking ready and never taking a job.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_without_its_subscriptions_refuses_to_start() {
    let Some(server) = AccountsServer::start().await else {
        return;
    };
    // The auditor may subscribe to audit subjects only.
    let env = server.env_as("auditor");
    let mut envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    envs.extend([("SANDBOX_BACKEND", "none"), ("METRICS_ADDR", "127.0.0.1:0")]);
    let out = tokio::time::timeout(Duration::from_secs(60), OPENSHELL.cli(["worker"], &envs))
        .await
        .expect("the worker exits instead of serving without its subscriptions");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("refused the worker's subscriptions") && stderr.contains("openshell.exec"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_jobs_wait_out_an_sshd_outage() {
    let Some(mut sshd) = Sshd::start().await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let ssh_env = sshd.worker_env();
    let mut envs = vec![
        ("NATS_URL", url.as_str()),
        ("OPENSHELL_DURABLE", "true"),
        ("OPENSHELL_SLOTS", "4"),
    ];
    envs.extend(ssh_env.iter().map(|(name, value)| (*name, value.as_str())));
    let worker = OPENSHELL.worker(&envs).await;
    sshd.stop();
    let (_, client) = durable::client(&nats).await;
    let ids = queue(&client, "ssh", "ssh-outage", 30).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    sshd.restart().await;
    assert_all_complete(&client, &ids, &worker).await;
}
