//! A quick latency measurement, not a timed test (run it by hand):
//!
//! ```sh
//! cargo test -p openshell-worker --test docker_latency -- --ignored --nocapture
//! ```
//!
//! p50/p95 of one small Python job through the Docker backend with the warm pool, without it,
//! and `docker run --rm` of the same command with the same limits and hardening, in one run.

use std::process::Command;
use std::time::{Duration, Instant};

use openshell_backend::{Backend, Ending, Job, JobControl, OutputSink, PoolContext};
use openshell_backend_docker::DockerBackend;
use openshell_protocol::Limits;
use openshell_test_support::dockerd;
use openshell_test_support::jobs::python_job;
use openshell_worker::config::PoolConfig;
use tokio_util::sync::CancellationToken;

const RUNS: usize = 20;
const CODE: &str = "print('hi')";

/// The docker pools' built-in default limits.
fn limits() -> Limits {
    PoolConfig::for_backend(openshell_backend::BackendKind::Docker).defaults
}

fn job() -> Job {
    python_job("latency".into(), "bench", CODE, limits())
}

/// Latencies of `RUNS` sequential jobs on a backend with `warm` warm containers, the pool's
/// defaults equal to the job's limits (as production pools have them).
async fn backend_runs(warm: usize) -> Vec<Duration> {
    let backend = {
        let name = dockerd::pool_name(&format!("latency{warm}"));
        let context = PoolContext {
            defaults: limits(),
            ..dockerd::context(&name)
        };
        DockerBackend::new(dockerd::settings(warm, None), &context).expect("backend")
    };
    // Let the warm pool fill before the first job, as it has in a worker that has been up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut times = Vec::new();
    for _ in 0..RUNS {
        // Jobs arrive spaced out, as the warm pool is sized for, not back to back.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let control = JobControl {
            cancel: CancellationToken::new(),
            output: OutputSink::new(1 << 20),
        };
        let started = Instant::now();
        let execution = backend.execute(job(), control.clone()).await.expect("job");
        times.push(started.elapsed());
        assert_eq!(execution.ending, Ending::Exited);
        assert_eq!(control.output.snapshot().stdout, b"hi\n");
    }
    times
}

/// `docker run --rm` of the same program with the same limits and hardening.
fn docker_run_runs() -> Vec<Duration> {
    let image = dockerd::image();
    let args = [
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/tmp:rw,nosuid,nodev,exec,size=268435456,mode=1777",
        "--tmpfs",
        "/workspace:rw,nosuid,nodev,exec,size=268435456,uid=1000,gid=1000,mode=0700",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        "1000:1000",
        "--init",
        "--pids-limit",
        "258",
        "--memory",
        "512m",
        "--memory-swap",
        "512m",
        "--cpus",
        "1",
        "--ulimit",
        "nofile=256:256",
        "--log-driver",
        "none",
        &image,
        "python3",
        "-c",
        CODE,
    ];
    (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            let output = Command::new("docker")
                .args(args)
                .output()
                .expect("docker run");
            assert_eq!(
                output.stdout,
                b"hi\n",
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            started.elapsed()
        })
        .collect()
}

fn percentile(times: &[Duration], percent: usize) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[(sorted.len() * percent / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, run by hand"]
async fn warm_pool_cold_start_and_docker_run_latency() {
    if !dockerd::available() {
        return;
    }
    let warm = backend_runs(2).await;
    let cold = backend_runs(0).await;
    let run = docker_run_runs();
    let run_p50 = percentile(&run, 50).as_secs_f64();
    for (name, times) in [
        ("warm pool", &warm),
        ("no warm pool", &cold),
        ("docker run --rm", &run),
    ] {
        let (p50, p95) = (percentile(times, 50), percentile(times, 95));
        println!(
            "{name:>16}: p50 {:>6.1} ms  p95 {:>6.1} ms  ({:.2} x docker run --rm)",
            p50.as_secs_f64() * 1e3,
            p95.as_secs_f64() * 1e3,
            p50.as_secs_f64() / run_p50
        );
    }
}
