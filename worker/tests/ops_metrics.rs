//! Metrics against real processes: a nats-server, an `openshell worker`, `promtool check
//! metrics` on a live scrape, a real Prometheus server reading the worker back, and Docker and
//! SSH workers (real dockerd, real sshd) feeding the backend series.

use std::process::Stdio;
use std::time::Duration;

use openshell_protocol::{Client, DurationMs, ExecRequest, Limits, Verdict};
use openshell_test_support::dockerd;
use openshell_test_support::nats::NatsServer;
use openshell_test_support::prometheus::PrometheusServer;
use openshell_test_support::sshd::Sshd;
use openshell_test_support::{Openshell, WorkerProcess, http};
use tokio::io::AsyncWriteExt;

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

async fn worker(nats: &NatsServer) -> WorkerProcess {
    let url = nats.url();
    OPENSHELL
        .worker(&[("NATS_URL", url.as_str()), ("SANDBOX_BACKEND", "none")])
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn live_scrape_passes_promtool_and_names_follow_conventions() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let worker = worker(&nats).await;
    let addr = worker.metrics_addr();
    // A job that hits its timeout feeds the job and limit series.
    let url = nats.url();
    let out = OPENSHELL
        .cli(
            [
                "exec",
                "--lang",
                "bash",
                "--timeout",
                "300ms",
                "-c",
                "sleep 5",
            ],
            &[("NATS_URL", url.as_str()), ("SANDBOX_BACKEND", "none")],
        )
        .await;
    assert!(!out.status.success(), "a timed-out job exits non-zero");

    let (status, text) = http::get(&addr, "/metrics", "*/*").await;
    assert_eq!(status, 200);
    for line in [
        "openshell_jobs_total{pool=\"none\",backend=\"none\",verdict=\"timeout\"} 1",
        "openshell_limits_hit_total{pool=\"none\",limit=\"timeout\"} 1",
        "openshell_backend_up{pool=\"none\",backend=\"none\"} 1",
        "openshell_nats_connected 1",
        "# TYPE openshell_jobs_total counter",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(!text.contains("tenant="), "no tenant label by default");
    let (_, open) = http::get(&addr, "/metrics", "application/openmetrics-text").await;
    assert!(open.ends_with("# EOF\n"), "OpenMetrics when asked for");

    let Some(promtool) =
        openshell_test_support::tool("promtool", "run deploy/setup.sh --install-only")
    else {
        return;
    };
    let mut check = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    let mut stdin = check.stdin.take().expect("promtool stdin");
    stdin
        .write_all(text.as_bytes())
        .await
        .expect("feed promtool");
    drop(stdin);
    let checked = check.wait_with_output().await.expect("promtool runs");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// Before any job, every series an alert reads is already there at 0, so the first failure
/// shows as an `increase()` (deploy/prometheus/alerts.test.yml shows why that matters), and
/// the `process_*` series are exported.
#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_worker_exports_the_alerted_series_at_zero_and_process_metrics() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let worker = worker(&nats).await;
    let addr = worker.metrics_addr();
    let (status, text) = http::get(&addr, "/metrics", "*/*").await;
    assert_eq!(status, 200);
    for line in [
        "openshell_audit_events_total{outcome=\"failed\"} 0",
        "openshell_audit_events_total{outcome=\"published\"} 0",
        "openshell_jobs_total{pool=\"none\",backend=\"none\",verdict=\"backend_error\"} 0",
        "openshell_jobs_total{pool=\"none\",backend=\"none\",verdict=\"completed\"} 0",
        "openshell_backend_health_check_failures_total{pool=\"none\",backend=\"none\"} 0",
        "openshell_limits_hit_total{pool=\"none\",limit=\"memory\"} 0",
        "openshell_limits_hit_total{pool=\"none\",limit=\"timeout\"} 0",
        "openshell_requests_rejected_total{pool=\"none\",kind=\"overloaded\"} 0",
        "openshell_queue_wait_seconds_count{pool=\"none\"} 0",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{name}` sample in:\n{text}"))
    };
    assert!(value("process_cpu_seconds_total") >= 0.0);
    for name in [
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(value(name) > 0.0, "{name} is positive");
    }
    assert!(value("process_open_fds") <= value("process_max_fds"));
    assert!(value("process_resident_memory_bytes") <= value("process_virtual_memory_bytes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_and_reconnects_follow_the_nats_connection() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let worker = worker(&nats).await;
    let addr = worker.metrics_addr();
    assert_eq!(http::get(&addr, "/healthz", "*/*").await.0, 200);
    assert_eq!(http::get(&addr, "/readyz", "*/*").await.0, 200);
    nats.stop().await;
    wait_for(&addr, "/readyz", |status, _| status == 503).await;
    wait_for(&addr, "/metrics", |_, text| {
        text.contains("openshell_nats_connected 0")
    })
    .await;
    nats.restart().await;
    wait_for(&addr, "/readyz", |status, _| status == 200).await;
    wait_for(&addr, "/metrics", |_, text| {
        text.contains("openshell_nats_reconnects_total 1")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_the_worker_and_answers_a_query() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let worker = worker(&nats).await;
    let addr = worker.metrics_addr();
    let Some(prometheus) = PrometheusServer::start(&[&addr]).await else {
        return;
    };
    let up = prometheus
        .query_value("up{job=\"openshell\"}", Duration::from_secs(30))
        .await;
    assert_eq!(up.as_deref(), Some("1"), "Prometheus scraped the worker");
    let healthy = prometheus
        .query_value(
            "openshell_backend_up{pool=\"none\",backend=\"none\"}",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        healthy.as_deref(),
        Some("1"),
        "metric read back through the query API"
    );
}

/// Polls `path` until `done(status, body)`, for up to 20 s.
async fn wait_for(addr: &str, path: &str, done: impl Fn(u16, &str) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http::get(addr, path, "*/*").await;
        if done(status, &body) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} never matched; last: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_series_are_opt_in_and_capped() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let worker = OPENSHELL
        .worker(&[
            ("NATS_URL", url.as_str()),
            ("SANDBOX_BACKEND", "none"),
            ("METRICS_TENANT_LABELS", "1"),
        ])
        .await;
    let addr = worker.metrics_addr();
    for tenant in ["acme", "globex", "initech"] {
        let out = OPENSHELL
            .cli(
                ["exec", "--lang", "bash", "--tenant", tenant, "-c", "true"],
                &[("NATS_URL", url.as_str()), ("SANDBOX_BACKEND", "none")],
            )
            .await;
        assert!(out.status.success(), "{out:?}");
    }
    let (_, text) = http::get(&addr, "/metrics", "*/*").await;
    assert!(
        text.contains("openshell_tenant_jobs_total{tenant=\"acme\",verdict=\"completed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("openshell_tenant_jobs_total{tenant=\"_other\",verdict=\"completed\"} 2"),
        "{text}"
    );
    assert!(!text.contains("globex"), "past the cap: {text}");
}

/// A Docker job feeds the backend series: sandbox start latency, the warm pool, and a fork the
/// pids limit refused (read from the container's `pids.events`).
#[tokio::test(flavor = "multi_thread")]
async fn docker_jobs_feed_start_latency_warm_pool_and_pids_limit_series() {
    if !dockerd::available() {
        return;
    }
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let image = dockerd::image();
    let docker_host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let mut envs = vec![
        ("NATS_URL", url.as_str()),
        ("SANDBOX_BACKEND", "docker"),
        ("SANDBOX_DOCKER_IMAGE", image.as_str()),
    ];
    if !docker_host.is_empty() {
        envs.push(("DOCKER_HOST", docker_host.as_str()));
    }
    let mut worker = OPENSHELL.worker(&envs).await;
    let addr = worker.metrics_addr();
    let client = Client::connect(&url).await.expect("client connects");
    let mut request = ExecRequest::code("forks", "python", FORK_UNTIL_REFUSED);
    request.limits = Limits {
        timeout: Some(DurationMs::secs(30)),
        processes: Some(8),
        ..Limits::default()
    };
    let result = client
        .exec("docker", "acme", &request)
        .await
        .expect("a result");
    assert_eq!(result.status, Verdict::Completed, "{result:?}");
    assert!(
        result.stdout.to_text_lossy().contains("refused"),
        "the pids limit refused a fork: {result:?}"
    );
    // The pool's canary (a health check) starts sandboxes too, so the job is one of several.
    wait_for(&addr, "/metrics", |_, text| {
        let started = text.lines().find_map(|line| {
            line.strip_prefix("openshell_backend_start_seconds_count{pool=\"docker\"} ")?
                .parse::<u64>()
                .ok()
        });
        started.is_some_and(|count| count >= 2)
            && [
                "openshell_warm_pool_size{pool=\"docker\"} 2",
                "openshell_warm_pool_available{pool=\"docker\"} ",
                "openshell_limits_hit_total{pool=\"docker\",limit=\"processes\"} 1",
                "openshell_backend_up{pool=\"docker\",backend=\"docker\"} 1",
            ]
            .iter()
            .all(|line| text.contains(line))
    })
    .await;
    // A SIGTERM, not the kill on drop: the worker removes its warm containers as it stops.
    let label = format!("openshell.worker={}", result.worker_id);
    assert!(worker.terminate().await.success(), "{}", worker.logs());
    dockerd::assert_none_left(None, &label, Duration::from_secs(15)).await;
}

/// Forks sleeping children until the kernel refuses one, then kills them.
const FORK_UNTIL_REFUSED: &str = "\
import os, signal, time
kids = []
try:
    for _ in range(64):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        kids.append(pid)
    print('never refused')
except OSError as error:
    print('refused', error.errno)
for pid in kids:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
";

/// An SSH worker feeds the SSH series: the pooled connection, its leased channels, and a
/// reconnect after the host's sshd went away under it.
#[tokio::test(flavor = "multi_thread")]
async fn ssh_jobs_feed_connection_channel_and_reconnect_series() {
    let Some(mut sshd) = Sshd::start().await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let ssh_env = sshd.worker_env();
    let mut envs = vec![("NATS_URL", url.as_str())];
    envs.extend(ssh_env.iter().map(|(name, value)| (*name, value.as_str())));
    let worker = OPENSHELL.worker(&envs).await;
    let addr = worker.metrics_addr();
    let run = || async {
        let env = [("NATS_URL", url.as_str()), ("SANDBOX_BACKEND", "ssh")];
        let out = OPENSHELL
            .cli(["exec", "--lang", "sh", "-c", "echo over-ssh"], &env)
            .await;
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "over-ssh\n");
    };
    run().await;
    wait_for(&addr, "/metrics", |_, text| {
        text.contains("openshell_ssh_connections_open{pool=\"ssh\"} 1")
            && text.contains("openshell_ssh_channels_in_use{pool=\"ssh\"} 0")
    })
    .await;

    sshd.restart().await;
    run().await;
    wait_for(&addr, "/metrics", |_, text| {
        text.contains("openshell_ssh_reconnects_total{pool=\"ssh\"} 1")
            && text.contains("openshell_ssh_connections_open{pool=\"ssh\"} 1")
    })
    .await;
}
