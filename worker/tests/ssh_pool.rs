//! Pooled connections: concurrent jobs share connections (8 channels each), and channels are
//! closed so that thousands of jobs never hit sshd's MaxSessions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use openshell_backend::Backend;
use tokio_util::sync::CancellationToken;

use openshell_test_support::jobs::{bash_job, run};
use openshell_test_support::sshd::SshdBackend;

/// Runs `count` copies of `script` at once and returns how many succeeded.
async fn burst(ssh: &Arc<SshdBackend>, count: usize, script: &str) -> usize {
    let jobs = (0..count).map(|_| {
        let ssh = ssh.clone();
        let job = bash_job(script);
        async move {
            let (result, output) = run(ssh.as_ref(), job, CancellationToken::new()).await;
            let execution = result.unwrap_or_else(|error| panic!("job failed: {error}"));
            (execution.exit_code == Some(0) && output.stdout == b"ok\n") as usize
        }
    });
    futures::future::join_all(jobs).await.into_iter().sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn forty_concurrent_jobs_use_at_most_five_connections() {
    let Some(ssh) = SshdBackend::start().await else {
        return;
    };
    let ssh = Arc::new(ssh);
    let (peak_tcp, peak_pool) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (ssh, peak_tcp, peak_pool, done) = (
            ssh.clone(),
            peak_tcp.clone(),
            peak_pool.clone(),
            done.clone(),
        );
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak_tcp.fetch_max(ssh.sshd.established_connections(), Ordering::Relaxed);
                let status = ssh.backend.status().await;
                peak_pool.fetch_max(status[0].connections, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let succeeded = burst(&ssh, 40, "sleep 1; echo ok").await;
    done.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    assert_eq!(succeeded, 40);
    let (tcp, pool) = (
        peak_tcp.load(Ordering::Relaxed),
        peak_pool.load(Ordering::Relaxed),
    );
    eprintln!("40 concurrent jobs: peak {pool} pooled connections, {tcp} TCP connections to sshd");
    assert!(pool <= 5 && tcp <= 5, "pool {pool}, tcp {tcp}");
    assert!(
        pool >= 5,
        "40 jobs at 8 channels a connection need 5 connections, saw {pool}"
    );
    let status = ssh.backend.status().await;
    assert_eq!(status[0].leases, 40, "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn channels_are_closed_so_many_jobs_never_exhaust_max_sessions() {
    let Some(ssh) = SshdBackend::start().await else {
        return;
    };
    let ssh = Arc::new(ssh);
    let mut succeeded = 0;
    for _ in 0..25 {
        succeeded += burst(&ssh, 8, "echo ok").await;
    }
    assert_eq!(succeeded, 200);
    let status = ssh.backend.status().await;
    assert_eq!(status[0].connections, 1, "{status:?}");
    // A leaked channel would hold a session slot for good: after 200 jobs the connection
    // still runs a full set of channels at once.
    assert_eq!(burst(&ssh, 8, "sleep 0.5; echo ok").await, 8);
    assert_eq!(ssh.backend.status().await[0].connections, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_reports_a_reachable_host() {
    let Some(ssh) = SshdBackend::start().await else {
        return;
    };
    ssh.health().await.expect("healthy");
}
