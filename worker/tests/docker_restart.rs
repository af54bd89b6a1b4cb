//! The Docker daemon going away: on a private `dockerd` of the test's own, jobs get clear
//! connection errors while it is down or restarting, and the backend recovers by itself.

use std::sync::Arc;
use std::time::Duration;

use openshell_backend::{Backend, BackendError, Ending, Execution, Job, JobControl, OutputSink};
use openshell_backend_docker::DockerBackend;
use openshell_protocol::{ByteSize, DurationMs, ErrorKind, Limits};
use openshell_test_support::dockerd::{self, PrivateDockerd};
use tokio_util::sync::CancellationToken;

fn job(argv: &[&str]) -> Job {
    Job {
        id: format!("restart-{}", argv.join("-")),
        tenant: "restart".into(),
        language: None,
        argv: argv.iter().map(|arg| arg.to_string()).collect(),
        stdin: Default::default(),
        env: Default::default(),
        files: vec![],
        limits: Limits {
            timeout: Some(DurationMs::secs(60)),
            output: Some(ByteSize::kib(64)),
            ..Limits::default()
        },
        network: false,
        egress: None,
        outputs: None,
    }
}

async fn execute(backend: &DockerBackend, job: Job) -> (Result<Execution, BackendError>, String) {
    let control = JobControl {
        cancel: CancellationToken::new(),
        output: OutputSink::new(64 << 10),
    };
    let result = backend.execute(job, control.clone()).await;
    let stdout = String::from_utf8_lossy(&control.output.snapshot().stdout).into_owned();
    (result, stdout)
}

async fn assert_serves(backend: &DockerBackend) {
    let (result, stdout) = execute(backend, job(&["echo", "served"])).await;
    let execution = result.unwrap_or_else(|error| panic!("the backend did not recover: {error}"));
    assert_eq!(
        (execution.ending, stdout.as_str()),
        (Ending::Exited, "served\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_down_and_restarts_give_clear_errors_and_the_backend_recovers() {
    if !dockerd::available() {
        return;
    }
    let mut daemon = PrivateDockerd::start().await;
    let host = daemon.host();
    let name = dockerd::pool_name("restart");
    let backend = Arc::new(docker_backend(&name, &host));
    assert_serves(&backend).await;
    backend.health().await.expect("healthy");

    // A job in flight when the daemon restarts fails as `sandbox_lost` (it ran, in part), not
    // with a verdict, and not as a connection failure (which means it never started).
    let in_flight = tokio::spawn({
        let backend = Arc::clone(&backend);
        async move { execute(&backend, job(&["sleep", "30"])).await.0 }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.restart().await;
    let error = in_flight
        .await
        .expect("join")
        .expect_err("a job outlived its daemon");
    assert_eq!(error.kind, ErrorKind::SandboxLost, "{error}");
    assert!(
        error.message.contains("lost the Docker daemon") && error.message.contains("resubmit"),
        "{error}"
    );

    // Later jobs succeed: dead warm containers are replaced.
    for _ in 0..3 {
        assert_serves(&backend).await;
    }

    // While the daemon is down, jobs and health say so and what to do.
    daemon.stop().await;
    let (result, _) = execute(&backend, job(&["true"])).await;
    let error = result.expect_err("a job ran without a daemon");
    assert_eq!(error.kind, ErrorKind::ConnectionFailed, "{error}");
    assert!(
        error.to_string().contains(&host) && error.message.contains("deploy/setup.sh"),
        "{error}"
    );
    let error = backend
        .health()
        .await
        .expect_err("healthy without a daemon");
    assert_eq!(error.kind, ErrorKind::ConnectionFailed, "{error}");

    daemon.restart().await;
    assert_serves(&backend).await;
    backend.health().await.expect("healthy again");

    drop(backend);
    dockerd::assert_none_left(
        Some(&host),
        &dockerd::pool_label(&name),
        Duration::from_secs(10),
    )
    .await;
}

/// The Docker backend of pool `name` on the daemon at `host`, one warm container, no metrics.
fn docker_backend(name: &str, host: &str) -> DockerBackend {
    DockerBackend::new(dockerd::settings(1, Some(host)), &dockerd::context(name)).expect("backend")
}
