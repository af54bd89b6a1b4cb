//! Broken connections: an sshd restart mid-run gives the in-flight job a clear error and
//! kills its processes, later jobs succeed; a down host is skipped until it recovers.

use std::time::{Duration, Instant};

use openshell_backend::Backend;
use openshell_backend_ssh::{SshBackend, SshSettings};
use openshell_protocol::ErrorKind;
use tokio_util::sync::CancellationToken;

use openshell_test_support::jobs::{bash_job, marker, run};
use openshell_test_support::process::processes_with;
use openshell_test_support::sshd::{Sshd, SshdBackend};

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn assert_runs(backend: &dyn Backend) {
    let (result, output) = run(backend, bash_job("echo ok"), CancellationToken::new()).await;
    let execution = result.unwrap_or_else(|error| panic!("job failed: {error}"));
    assert_eq!(
        (execution.exit_code, output.stdout.as_slice()),
        (Some(0), b"ok\n".as_slice())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sshd_restart_mid_run_fails_the_job_clearly_and_later_jobs_succeed() {
    let Some(mut ssh) = SshdBackend::start().await else {
        return;
    };
    let marker = marker("restart");
    let job = bash_job(&format!("(exec -a {marker} sleep 60)\n"));
    let running = {
        let backend = &ssh.backend;
        async move { run(backend, job, CancellationToken::new()).await }
    };
    let restart = async {
        wait_for("the job to start", Duration::from_secs(10), || {
            !processes_with(&marker).is_empty()
        })
        .await;
        ssh.sshd.restart().await;
    };
    let ((result, _), ()) = tokio::join!(running, restart);
    let error = result.expect_err("the job survived its connection");
    // It ran in part: `sandbox_lost`, not a failure to start that would be run again.
    assert_eq!(error.kind, ErrorKind::SandboxLost, "{error}");
    assert!(
        error.message.starts_with("Sandbox connection failed"),
        "{error}"
    );
    assert!(
        error.to_string().contains("dropped while the job ran"),
        "{error}"
    );
    assert_runs(&ssh.backend).await;
    wait_for(
        "the orphaned job to be killed",
        // The kill retries until the restarted sshd serves a connection again.
        Duration::from_secs(30),
        || processes_with(&marker).is_empty(),
    )
    .await;
    assert_runs(&ssh.backend).await;
    ssh.sshd.restart().await;
    // Idle pooled connections died too: the next job gets a fresh one without an error.
    assert_runs(&ssh.backend).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_down_host_is_skipped_until_it_recovers() {
    let (Some(mut first), Some(second)) = (Sshd::start().await, Sshd::start().await) else {
        return;
    };
    // One key and one known_hosts for both servers.
    let known = tempfile::NamedTempFile::new().unwrap();
    let hosts = [first.known_hosts(), second.known_hosts()]
        .map(|path| std::fs::read_to_string(path).unwrap());
    std::fs::write(known.path(), hosts.concat()).unwrap();
    let settings = SshSettings {
        hosts: vec![
            format!("127.0.0.1:{}", first.port()),
            format!("127.0.0.1:{}", second.port()),
        ],
        known_hosts: Some(known.path().to_path_buf()),
        ..first.settings()
    };
    // prepare.sh authorized the same client key for both: they serve one prepared host.
    let backend = SshBackend::start(settings, &openshell_backend::PoolContext::bare("ssh"))
        .await
        .expect("both hosts up");
    first.stop();
    for _ in 0..6 {
        assert_runs(&backend).await;
    }
    let status = backend.status().await;
    assert_eq!(status[0].connections, 0, "{status:?}");
    first.restart().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..6 {
        assert_runs(&backend).await;
    }
    let status = backend.status().await;
    assert!(
        status.iter().all(|host| host.connections == 1),
        "jobs did not spread again: {status:?}"
    );
}
