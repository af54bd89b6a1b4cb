//! The whole path on the Docker backend: a nats-server, an `openshell worker` with
//! `SANDBOX_BACKEND=docker`, and hostile jobs through NATS; the worker keeps serving and
//! leaves no container behind. Needs nats-server, dockerd and the sandbox image.

use std::time::Duration;

use openshell_protocol::{ByteSize, Client, DurationMs, ExecRequest, Limits, Verdict};
use openshell_test_support::nats::NatsServer;
use openshell_test_support::{Openshell, dockerd};

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

fn request(id: &str, language: &str, code: &str, limits: Limits) -> ExecRequest {
    let mut request = ExecRequest::code(id, language, code);
    request.limits = limits;
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_jobs_through_nats_get_their_verdicts_and_the_worker_keeps_serving() {
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
        ("SANDBOX_DOCKER_MEMORY", "256m"),
        ("SANDBOX_DOCKER_CPUS", "1"),
        ("SANDBOX_DOCKER_TIMEOUT", "10"),
        ("LOG_LEVEL", "debug"),
    ];
    if !docker_host.is_empty() {
        envs.push(("DOCKER_HOST", docker_host.as_str()));
    }
    let mut worker = OPENSHELL.worker(&envs).await;
    let client = Client::connect(&url).await.expect("client connects");

    let hostile = [
        (
            "bomb",
            "python",
            "x = b'1' * (1 << 30)\nprint(len(x))\n",
            Verdict::OutOfMemory,
        ),
        ("loop", "bash", "while :; do :; done", Verdict::Timeout),
        ("flood", "bash", "yes", Verdict::OutputLimit),
        (
            "fork",
            "bash",
            "f() { f | f & }\nf\nwait\nsleep 60\n",
            Verdict::Timeout,
        ),
    ];
    let jobs = hostile.iter().map(|(id, language, code, verdict)| {
        // Out of memory ends the bomb by itself; a short timeout would race it on a busy host.
        let timeout = if *verdict == Verdict::OutOfMemory {
            30
        } else {
            3
        };
        let limits = Limits {
            timeout: Some(DurationMs::secs(timeout)),
            processes: Some(64),
            output: Some(ByteSize::kib(64)),
            ..Limits::default()
        };
        let request = request(id, language, code, limits);
        let client = &client;
        async move { client.exec("docker", "acme", &request).await }
    });
    let results = futures::future::join_all(jobs).await;
    for ((id, _, _, verdict), result) in hostile.iter().zip(results) {
        let result = result.unwrap_or_else(|error| panic!("{id}: {error}"));
        assert_eq!(result.status, *verdict, "{id}: {result:?}");
        assert_eq!(result.backend, "docker");
        assert!(
            result
                .enforcement
                .contains_key(&openshell_protocol::LimitName::Memory),
            "{id}: {result:?}"
        );
    }

    let result = client
        .exec(
            "docker",
            "acme",
            &ExecRequest::code("after", "python", "print(6 * 7)"),
        )
        .await
        .expect("the worker still answers");
    assert_eq!(result.status, Verdict::Completed, "{result:?}");
    assert_eq!(result.stdout.to_text_lossy(), "42\n");
    assert!(
        result.peak_memory_bytes.is_some() && result.cpu_time_ms.is_some(),
        "{result:?}"
    );

    let logs = worker.logs();
    assert!(
        logs.contains("OpenShell: Docker backend connected to "),
        "{logs}"
    );
    assert!(
        logs.contains("(engine ") && logs.contains(", API 1."),
        "{logs}"
    );
    assert!(
        logs.contains("docker backend: job handed to the runner")
            && logs.contains(r#""python3", "main.py""#),
        "{logs}"
    );
    assert!(logs.contains("raw output") && logs.contains("42"), "{logs}");

    // The worker id defaults to host-pid, as the containers' worker label does: its warm
    // containers carry it until the worker stops.
    let label = format!("openshell.worker={}", result.worker_id);
    assert!(
        !dockerd::containers_with(None, &label).is_empty(),
        "no container has {label}"
    );
    let status = worker.terminate().await;
    assert!(status.success(), "worker exit {status}");
    dockerd::assert_none_left(None, &label, Duration::from_secs(15)).await;
}
