//! Logs of a real worker with `LOG_FORMAT=json`: every line is JSON, and the lines about a job
//! carry its id, tenant and pool.

use openshell_test_support::Openshell;
use openshell_test_support::nats::NatsServer;

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_name_the_job_tenant_and_pool() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let mut worker = OPENSHELL
        .local_worker(&nats, &[("LOG_FORMAT", "json"), ("LOG_LEVEL", "info")])
        .await;
    let out = OPENSHELL
        .cli(
            [
                "exec",
                "--lang",
                "bash",
                "--tenant",
                "acme",
                "--id",
                "log-job-1",
                "-c",
                "echo hi",
            ],
            &[("NATS_URL", url.as_str()), ("SANDBOX_BACKEND", "none")],
        )
        .await;
    assert!(out.status.success(), "{out:?}");
    worker.terminate().await;
    let logs = worker.logs();
    let mut job_lines = 0;
    for line in logs.lines() {
        let json: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(
            json["level"].is_string() && json["timestamp"].is_string(),
            "{line}"
        );
        if json["fields"]["message"] == "job finished" {
            job_lines += 1;
            let span = &json["span"];
            assert_eq!(span["id"], "log-job-1", "{line}");
            assert_eq!(span["tenant"], "acme", "{line}");
            assert_eq!(span["pool"], "none", "{line}");
        }
    }
    assert_eq!(job_lines, 1, "one `job finished` line:\n{logs}");
}
