//! Timeout, cancel and output limit kill the job's whole sandbox on the host: a /proc scan of
//! the host finds no process with the job's marker, not even one that left the job's session;
//! and a signal sshd cannot name still comes back by number.

use std::time::{Duration, Instant};

use openshell_backend::Ending;
use openshell_protocol::{ByteSize, DurationMs};
use tokio_util::sync::CancellationToken;

use openshell_test_support::jobs::{bash_job, marker, run};
use openshell_test_support::process::processes_with;
use openshell_test_support::sshd::SshdBackend;

/// A job that prints its directory, leaves a background process and a new session named
/// `marker`, and loops.
fn lingering(marker: &str) -> openshell_backend::Job {
    bash_job(&format!(
        "pwd\n(exec -a {marker} sleep 600) &\nsetsid bash -c 'exec -a {marker} sleep 600' &\nwhile :; do sleep 1; done\n"
    ))
}

/// Nothing of the job is left: no process with `marker` anywhere on the host.
async fn assert_gone(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left behind: processes {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_kills_every_process_of_the_job_on_the_host() {
    let Some(ssh) = SshdBackend::start().await else {
        return;
    };
    let marker = marker("timeout");
    let mut job = lingering(&marker);
    job.limits.timeout = Some(DurationMs::secs(1));
    let started = Instant::now();
    let (result, output) = run(&ssh.backend, job, CancellationToken::new()).await;
    let execution = result.expect("ran");
    assert_eq!(execution.ending, Ending::Timeout, "{execution:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "/workspace\n");
    assert_gone(&marker).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_kills_every_process_of_the_job_on_the_host() {
    let Some(ssh) = SshdBackend::start().await else {
        return;
    };
    let marker = marker("cancel");
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let watched = marker.clone();
    tokio::spawn(async move {
        while processes_with(&watched).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        trigger.cancel();
    });
    let (result, output) = run(&ssh.backend, lingering(&marker), cancel).await;
    assert_eq!(result.expect("ran").ending, Ending::Cancelled);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "/workspace\n");
    assert_gone(&marker).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_output_limit_kills_the_job_and_keeps_exactly_the_limit() {
    let Some(ssh) = SshdBackend::start().await else {
        return;
    };
    let marker = marker("flood");
    let mut job = bash_job(&format!("(exec -a {marker} sleep 600) &\nyes\n"));
    job.limits.output = Some(ByteSize::kib(64));
    let (result, output) = run(&ssh.backend, job, CancellationToken::new()).await;
    assert_eq!(result.expect("ran").ending, Ending::OutputLimit);
    assert_eq!(output.stdout.len() + output.stderr.len(), 64 * 1024);
    assert!(output.stdout_truncated);
    assert_gone(&marker).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_sshd_cannot_name_is_reported_by_number() {
    let Some(ssh) = SshdBackend::start().await else {
        return;
    };
    for (name, number) in [("XFSZ", 25), ("SEGV", 11)] {
        let (result, _) = run(
            &ssh.backend,
            bash_job(&format!("kill -s {name} $$\n")),
            CancellationToken::new(),
        )
        .await;
        let execution = result.expect("ran");
        assert_eq!(
            (execution.ending, execution.signal),
            (Ending::Exited, Some(number)),
            "SIG{name}: {execution:?}"
        );
    }
}
