//! A nats-server crash must not make a second worker run jobs the first is still running:
//! each queued job runs under a lease in `OPENSHELL_LEASES`, and a redelivery whose lease is
//! held is put back. Runs are counted from inside the jobs, by appending to a file: a host
//! directory that a sandboxed job cannot reach, so these workers run the local backend with
//! its bubblewrap sandbox off.

mod durable;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use openshell_protocol::{ExecRequest, Verdict};
use openshell_test_support::nats::NatsServer;
use openshell_test_support::{Openshell, WorkerProcess};

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

/// Pool `none` with the local sandbox off, so jobs can append to the test's file.
const UNSANDBOXED: &str =
    "[pools.none]\nbackend = \"none\"\n\n[pools.none.local]\nsandbox = \"off\"\n";

/// A durable worker like `durable::worker`, whose jobs reach this host's files.
async fn unsandboxed_worker(
    nats: &NatsServer,
    id: &str,
    config: &std::path::Path,
) -> WorkerProcess {
    let url = nats.url();
    let config = config.display().to_string();
    OPENSHELL
        .worker(&[
            ("NATS_URL", url.as_str()),
            ("OPENSHELL_CONFIG", config.as_str()),
            ("OPENSHELL_DURABLE", "true"),
            ("OPENSHELL_WORKER_ID", id),
            ("LOG_LEVEL", "info"),
            ("OPENSHELL_SLOTS", "4"),
        ])
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nats_crash_does_not_run_a_job_twice() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let runs = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("runs dir");
    std::fs::set_permissions(runs.path(), std::fs::Permissions::from_mode(0o777))
        .expect("let job users write");
    let config = runs.path().join("worker.toml");
    std::fs::write(&config, UNSANDBOXED).expect("worker config");
    let first = unsandboxed_worker(&nats, "lease-1", &config).await;
    let (_connection, client) = durable::client(&nats).await;
    let ids: Vec<String> = (0..4).map(|n| format!("long-{n}")).collect();
    for id in &ids {
        let marker = runs.path().join(id);
        let script = format!("echo run >> {}; sleep 6; echo done", marker.display());
        let job = ExecRequest::command(id.as_str(), vec!["sh".into(), "-c".into(), script]);
        client
            .submit("none", "acme", &job, None)
            .await
            .expect("submit");
    }
    let count = |id: &str| {
        std::fs::read_to_string(runs.path().join(id))
            .map(|text| text.lines().count())
            .unwrap_or(0)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ids.iter().any(|id| count(id) == 0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the jobs did not start:\n{}",
            first.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nats.kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.start_again().await;
    let second = unsandboxed_worker(&nats, "lease-2", &config).await;

    let results = durable::await_results(&client, "acme", &ids, Duration::from_secs(90)).await;
    for id in &ids {
        assert_eq!(results[id].status, Verdict::Completed, "{:?}", results[id]);
        assert_eq!(
            count(id),
            1,
            "{id} ran more than once\nfirst worker:\n{}\nsecond worker:\n{}",
            first.logs(),
            second.logs()
        );
    }
    let (connection, _) = durable::client(&nats).await;
    let stored = durable::results_per_subject(&connection).await;
    for id in &ids {
        assert_eq!(
            stored.get(&format!("openshell.results.acme.{id}")),
            Some(&1)
        );
    }
}
