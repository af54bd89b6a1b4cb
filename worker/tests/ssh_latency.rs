//! Job latency through the SSH backend next to `ssh host true` with a fresh connection and
//! through an OpenSSH ControlMaster socket, same host, same run. Ignored by default:
//! `cargo test --release -p openshell-worker --test ssh_latency -- --ignored --nocapture`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use openshell_backend::Job;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use openshell_test_support::jobs::{bash_job, run};
use openshell_test_support::sshd::{SshdBackend, TEST_USER};

/// Samples per method.
const SAMPLES: usize = 60;

fn percentile(samples: &mut [Duration], percent: usize) -> Duration {
    samples.sort();
    samples[(samples.len() * percent / 100).min(samples.len() - 1)]
}

fn ssh(ssh: &SshdBackend, extra: &[&str]) -> Command {
    let mut command = Command::new("ssh");
    command
        .args([
            "-q",
            "-T",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            ssh.sshd.known_hosts().display()
        ))
        .arg("-i")
        .arg(ssh.sshd.client_key())
        .args(["-p", &ssh.sshd.port().to_string()])
        .args(extra)
        .arg(format!("{TEST_USER}@127.0.0.1"))
        .arg("true")
        .stdin(Stdio::null());
    command
}

async fn time_ssh(backend: &SshdBackend, extra: &[&str]) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let status = ssh(backend, extra).status().await.expect("ssh");
        assert!(status.success());
        samples.push(started.elapsed());
    }
    samples
}

fn true_job() -> Job {
    let mut job = bash_job("");
    job.argv = vec!["true".into()];
    job.files.clear();
    job
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check: run with --ignored --nocapture"]
async fn p50_job_latency_against_plain_ssh() {
    let Some(backend) = SshdBackend::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control").display().to_string();
    let mut master = ssh(
        &backend,
        &["-M", "-N", "-o", "ControlPersist=no", "-S", &socket],
    )
    .kill_on_drop(true)
    .spawn()
    .expect("ssh -M");
    while !Path::new(&socket).exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut rows = Vec::new();
    let mut through_backend = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let (result, _) = run(&backend.backend, true_job(), CancellationToken::new()).await;
        assert_eq!(result.expect("job").exit_code, Some(0));
        through_backend.push(started.elapsed());
    }
    rows.push(("ssh backend (pooled russh)", through_backend));
    rows.push((
        "ssh -S ControlMaster",
        time_ssh(&backend, &["-S", &socket]).await,
    ));
    rows.push(("ssh fresh connection", time_ssh(&backend, &[]).await));
    let _ = master.kill().await;
    let mut p50s = Vec::new();
    for (name, samples) in &mut rows {
        let (p50, p95) = (percentile(samples, 50), percentile(samples, 95));
        eprintln!("{name:28} p50 {:7.2} ms  p95 {:7.2} ms", ms(p50), ms(p95));
        p50s.push(p50);
    }
    eprintln!(
        "ratios of p50: backend / ControlMaster = {:.2}, backend / fresh ssh = {:.3}",
        ms(p50s[0]) / ms(p50s[1]),
        ms(p50s[0]) / ms(p50s[2])
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
