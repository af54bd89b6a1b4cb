//! The bench harness runs end to end against the local backend and prints a well-formed
//! report, in core mode against fork/exec and in durable mode against core. No timing is
//! asserted: figures are for benchmarks, not tests.

use openshell_test_support::Openshell;
use openshell_test_support::nats::NatsServer;

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

/// Runs `openshell bench --json` with `args` against `nats`; its one-line report.
async fn bench_json(nats: &NatsServer, args: &[&str]) -> serde_json::Value {
    let url = nats.url();
    let common = [
        "bench",
        "--nats",
        &url,
        "--pool",
        "none",
        "--spawn-workers",
        "1",
        "--command",
        "true",
        "--json",
    ];
    let output = OPENSHELL
        .cli(
            common.iter().chain(args).copied(),
            &[("SANDBOX_BACKEND", "none")],
        )
        .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line: {stdout}");
    serde_json::from_str(lines[0]).expect("report is JSON")
}

/// Both sides have every latency figure, `completed` jobs only, and the ratios are numbers.
fn assert_two_sides(report: &serde_json::Value, completed: Option<u64>) {
    for side in ["openshell", "baseline"] {
        for field in [
            "throughput_per_sec",
            "p50_ms",
            "p90_ms",
            "p95_ms",
            "p99_ms",
            "max_ms",
        ] {
            assert!(
                report[side][field].is_number(),
                "{side}.{field} in {report}"
            );
        }
        let count = report[side]["verdicts"]["completed"].as_u64();
        assert!(count.is_some_and(|count| count > 0), "{report}");
        if let Some(completed) = completed {
            assert_eq!(count, Some(completed), "{report}");
        }
        assert_eq!(
            report[side]["verdicts"].as_object().map(|v| v.len()),
            Some(1),
            "{report}"
        );
        assert_eq!(report[side]["errors"], 0, "{report}");
    }
    for field in ["p50", "p90", "p95", "p99", "throughput"] {
        assert!(
            report["ratio"][field].is_number(),
            "ratio.{field} in {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_prints_a_well_formed_json_report() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let report = bench_json(
        &nats,
        &[
            "--total",
            "60",
            "--concurrency",
            "4",
            "--warmup",
            "5",
            "--baseline",
            "exec",
        ],
    )
    .await;
    assert_two_sides(&report, Some(60));
    for field in ["rss_idle_bytes", "rss_peak_bytes"] {
        assert!(
            report["worker"][field]
                .as_u64()
                .is_some_and(|bytes| bytes > 0),
            "worker.{field} in {report}"
        );
    }
    assert!(report["overhead"]["intake_mean_ms"].is_number(), "{report}");
    assert!(report["baseline_overhead"].is_null(), "{report}");
    assert_eq!(report["config"]["concurrency"], 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn durable_bench_reports_next_to_core_on_the_same_worker() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let report = bench_json(
        &nats,
        &[
            "--duration",
            "3s",
            "--concurrency",
            "4",
            "--warmup",
            "5",
            "--durable",
            "--baseline",
            "core",
        ],
    )
    .await;
    assert_two_sides(&report, None);
    assert_eq!(report["config"]["durable"], true, "{report}");
    assert_eq!(report["config"]["baseline"], "core", "{report}");
    for side in ["overhead", "baseline_overhead"] {
        for field in ["intake_mean_ms", "reply_mean_ms", "backend_mean_ms"] {
            assert!(
                report[side][field].is_number(),
                "{side}.{field} in {report}"
            );
        }
        assert!(
            report[side]["audit_share"].is_number(),
            "{side}.audit_share in {report}"
        );
    }
}

/// A run whose jobs do not complete exits non-zero and says how many failed and why; the
/// report is still printed. Every job asks for more memory than the pool's ceiling, so each is
/// rejected at once.
#[tokio::test(flavor = "multi_thread")]
async fn bench_fails_when_its_jobs_fail() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let args = [
        "bench",
        "--nats",
        &url,
        "--pool",
        "none",
        "--spawn-workers",
        "1",
        "--command",
        "true",
        "--memory",
        "64g",
        "--total",
        "8",
        "--concurrency",
        "2",
        "--warmup",
        "0",
        "--json",
    ];
    let output = OPENSHELL.cli(args, &[("SANDBOX_BACKEND", "none")]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "exit 0 although every job failed:\n{stdout}{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("report is JSON");
    assert_eq!(report["openshell"]["verdicts"]["rejected"], 8, "{report}");
    assert!(
        stderr.contains("8 of 8 OpenShell jobs did not complete (8 rejected)"),
        "{stderr}"
    );
}
