//! Liveness and readiness as probes see them, through `openshell health` (the Dockerfile's
//! HEALTHCHECK; Kubernetes probes ask the same paths): a worker still waiting for NATS is live
//! and not ready, so a liveness probe does not kill it; a serving worker is both.

use std::process::Stdio;
use std::time::{Duration, Instant};

use openshell_test_support::nats::NatsServer;
use openshell_test_support::{Openshell, free_port};

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

/// How long the worker's HTTP server may take to come up.
const LIVE_WITHIN: Duration = Duration::from_secs(10);

/// `openshell health` against `addr`, plus `extra` flags: its exit code and what it printed.
async fn health(addr: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["health", "--addr", addr];
    args.extend_from_slice(extra);
    let out = OPENSHELL.cli(args, &[]).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_waiting_for_nats_is_live_but_not_ready() {
    // Nobody listens on this port: the worker keeps waiting for NATS.
    let nats_url = format!("nats://127.0.0.1:{}", free_port());
    let addr = format!("127.0.0.1:{}", free_port());
    let mut worker = OPENSHELL
        .command(
            ["worker"],
            &[
                ("NATS_URL", nats_url.as_str()),
                ("METRICS_ADDR", addr.as_str()),
                ("SANDBOX_BACKEND", "none"),
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn openshell worker");

    let deadline = Instant::now() + LIVE_WITHIN;
    loop {
        let (code, text) = health(&addr, &[]).await;
        if code == 0 {
            assert_eq!(text, "ok\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not live within {LIVE_WITHIN:?} while waiting for NATS: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, text) = health(&addr, &["--ready"]).await;
    assert_eq!(code, 1, "ready without NATS: {text}");
    assert!(text.contains("503"), "{text}");
    assert!(
        worker.try_wait().expect("poll worker").is_none(),
        "the worker waits, it does not exit"
    );
    worker.kill().await.expect("kill worker");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_serving_worker_is_live_and_ready_and_nothing_listening_is_neither() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let worker = OPENSHELL.local_worker(&nats, &[]).await;
    let addr = worker.metrics_addr();
    // The health checks decide readiness; the first runs as the pool starts.
    let deadline = Instant::now() + LIVE_WITHIN;
    loop {
        let (code, text) = health(&addr, &["--ready"]).await;
        if code == 0 {
            assert_eq!(text, "ready\n");
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(health(&addr, &[]).await.0, 0);

    let nobody = format!("127.0.0.1:{}", free_port());
    let (code, text) = health(&nobody, &["--timeout", "1s"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("is the worker running"), "{text}");
}
