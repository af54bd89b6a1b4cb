//! The bench harness runs end to end against the local backend and prints a well-formed
//! report. No timing is asserted: figures are for benchmarks, not tests.

mod support;

use support::nats::NatsServer;

#[tokio::test(flavor = "multi_thread")]
async fn bench_prints_a_well_formed_json_report() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let output = support::cli(
        [
            "bench",
            "--nats",
            &url,
            "--pool",
            "none",
            "--spawn-workers",
            "1",
            "--command",
            "true",
            "--total",
            "60",
            "--concurrency",
            "4",
            "--warmup",
            "5",
            "--baseline",
            "exec",
            "--json",
        ],
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
    let report: serde_json::Value = serde_json::from_str(lines[0]).expect("report is JSON");
    for side in ["openshell", "baseline"] {
        for field in ["throughput_per_sec", "p50_ms", "p90_ms", "p99_ms", "max_ms"] {
            assert!(
                report[side][field].is_number(),
                "{side}.{field} in {report}"
            );
        }
        assert_eq!(report[side]["verdicts"]["completed"], 60, "{report}");
        assert_eq!(report[side]["errors"], 0, "{report}");
    }
    for field in ["p50", "p90", "p99", "throughput"] {
        assert!(
            report["ratio"][field].is_number(),
            "ratio.{field} in {report}"
        );
    }
    assert!(
        report["worker"]["rss_idle_bytes"]
            .as_u64()
            .is_some_and(|bytes| bytes > 0),
        "{report}"
    );
    assert!(
        report["worker"]["rss_peak_bytes"]
            .as_u64()
            .is_some_and(|bytes| bytes > 0),
        "{report}"
    );
    assert!(report["overhead"]["intake_mean_ms"].is_number(), "{report}");
    assert_eq!(report["config"]["concurrency"], 4);
}
