//! The host's resident runner (`sandbox serve`): jobs go to it, a runner killed mid-job fails
//! that job with a typed error and the next job is served (as after runners killed idle), and nothing a job prints can end
//! it (the end line carries a nonce the job never sees, and the job's bytes travel in frames).

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use openshell_protocol::ErrorKind;
use tokio_util::sync::CancellationToken;

use openshell_test_support::jobs::{bash_job, marker, run};
use openshell_test_support::process::{cmdline, processes_with};
use openshell_test_support::sshd::SshdBackend;

/// The runners' perl processes on this server (not the sudo above them).
fn runners(ssh: &SshdBackend) -> Vec<i32> {
    ssh.sshd
        .serving("sandbox serve")
        .into_iter()
        .filter(|pid| cmdline(*pid).contains("perl"))
        .collect()
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn assert_runs(ssh: &SshdBackend) {
    let (result, output) = run(&ssh.backend, bash_job("echo ok"), CancellationToken::new()).await;
    let execution = result.unwrap_or_else(|error| panic!("job failed: {error}"));
    assert_eq!(
        (execution.exit_code, output.stdout.as_slice()),
        (Some(0), b"ok\n".as_slice())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_go_to_a_resident_runner() {
    let Some(ssh) = SshdBackend::start().await else {
        return;
    };
    assert_runs(&ssh).await;
    assert!(!runners(&ssh).is_empty(), "no `sandbox serve` on the host");
    assert_runs(&ssh).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runner_killed_mid_job_fails_that_job_and_the_next_is_served() {
    let Some(ssh) = SshdBackend::start().await else {
        return;
    };
    assert_runs(&ssh).await;
    let marker = marker("runner-killed");
    let job = bash_job(&format!("(exec -a {marker} sleep 60)\n"));
    let running = {
        let backend = &ssh.backend;
        async move { run(backend, job, CancellationToken::new()).await }
    };
    let killer = async {
        wait_for("the job to start", Duration::from_secs(10), || {
            !processes_with(&marker).is_empty()
        })
        .await;
        for pid in runners(&ssh) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    };
    let ((result, _), ()) = tokio::join!(running, killer);
    let error = result.expect_err("the job survived its runner");
    // It ran in part: `sandbox_lost`, not a failure to start that would be run again.
    assert_eq!(error.kind, ErrorKind::SandboxLost, "{error}");
    wait_for(
        "the sandbox to die with its runner",
        Duration::from_secs(10),
        || processes_with(&marker).is_empty(),
    )
    .await;
    assert_runs(&ssh).await;
    // Runners killed while idle are dropped before a job is sent to them.
    for pid in runners(&ssh) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_runs(&ssh).await;
    assert_runs(&ssh).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_end_line_the_job_prints_is_output_not_an_ending() {
    let Some(ssh) = SshdBackend::start().await else {
        return;
    };
    let zeros = "0".repeat(32);
    let forged =
        format!("end {zeros} exit=0 cpu_ms=0 oom=0\\no 3\\nend {zeros} signal=9 cpu_ms=0 oom=0\\n");
    let script = format!("printf '{forged}'; printf '{forged}' >&2; sleep 0.2; exit 3\n");
    let (result, output) = run(&ssh.backend, bash_job(&script), CancellationToken::new()).await;
    let execution = result.unwrap_or_else(|error| panic!("job failed: {error}"));
    assert_eq!(execution.exit_code, Some(3), "{execution:?}");
    let printed = forged.replace("\\n", "\n");
    assert_eq!(String::from_utf8_lossy(&output.stdout), printed);
    assert_eq!(String::from_utf8_lossy(&output.stderr), printed);
    assert_runs(&ssh).await;
}
