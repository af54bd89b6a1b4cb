//! Cases for hostile jobs: they must be stopped, and nothing of them may survive.

use std::time::Duration;

use openshell_protocol::{ByteSize, DurationMs, Limits};
use openshell_worker::backend::{Backend, Ending, Job};
use tokio_util::sync::CancellationToken;

use super::{
    argv_job, assert_exited, assert_no_process_with, code_job, hostile_limits, marker, run,
    run_with,
};

/// How late a killed job may return after the moment it should have been stopped.
const SLACK: Duration = Duration::from_secs(3);

fn limited(job: Job, limits: Limits) -> Job {
    Job { limits, ..job }
}

/// An infinite loop is killed at its wall timeout.
pub async fn wall_timeout(backend: &dyn Backend) {
    let timeout = DurationMs::secs(1);
    let limits = Limits {
        timeout: Some(timeout),
        ..hostile_limits()
    };
    let run = run(
        backend,
        limited(code_job("bash", "while :; do :; done", &[]), limits),
    )
    .await;
    assert_eq!(run.execution.ending, Ending::Timeout, "{run:?}");
    assert_ne!(run.execution.exit_code, Some(0));
    assert!(
        run.elapsed < timeout.as_duration() + SLACK,
        "took {:?}",
        run.elapsed
    );
    assert!(
        run.execution.wall_time >= Duration::from_millis(900),
        "{run:?}"
    );
}

/// Allocating far past the memory limit ends as out of memory.
pub async fn memory_bomb(backend: &dyn Backend) {
    // Touched memory (not calloc'd zero pages), so cgroup backends see it too; bounded at
    // 2 GiB so a backend that fails to enforce the limit fails the case, not the machine.
    let code = "chunks = []\nfor _ in range(128):\n    chunks.append(b'\\x01' * (16 << 20))\nprint('survived')\n";
    let limits = Limits {
        memory: Some(ByteSize::mib(256)),
        ..hostile_limits()
    };
    let run = run(backend, limited(code_job("python", code, &[]), limits)).await;
    assert_eq!(
        run.execution.ending,
        Ending::OutOfMemory,
        "{run:?}\nstderr: {}",
        run.stderr()
    );
    assert!(!run.stdout().contains("survived"));
}

/// A fork bomb is contained by the process limit and stopped; the machine stays usable.
pub async fn fork_bomb(backend: &dyn Backend) {
    let marker = marker("fork-bomb");
    // Every subshell keeps the marker argument in its command line.
    let code = "bomb() { bomb | bomb & }\nbomb\nwait\nsleep 30\n";
    let timeout = DurationMs::secs(10);
    let limits = Limits {
        timeout: Some(timeout),
        processes: Some(64),
        memory: Some(ByteSize::mib(256)),
        ..hostile_limits()
    };
    let run = run(backend, limited(code_job("bash", code, &[&marker]), limits)).await;
    let succeeded = run.execution.ending == Ending::Exited && run.execution.exit_code == Some(0);
    assert!(!succeeded, "a fork bomb completed successfully: {run:?}");
    assert!(
        run.elapsed < timeout.as_duration() + SLACK,
        "took {:?}",
        run.elapsed
    );
    let status = tokio::process::Command::new("true").status().await;
    assert!(
        status.is_ok_and(|status| status.success()),
        "the test process cannot start processes"
    );
    assert_no_process_with(backend, &marker).await;
    let after = super::run(backend, code_job("sh", "echo still fine", &[])).await;
    assert_exited(&after, 0);
}

/// Endless output is cut at exactly the output limit and the job stopped.
pub async fn output_flood(backend: &dyn Backend) {
    let limits = Limits {
        output: Some(ByteSize::kib(64)),
        ..hostile_limits()
    };
    let run = run(backend, limited(argv_job(&["yes"]), limits)).await;
    assert_eq!(run.execution.ending, Ending::OutputLimit, "{run:?}");
    let kept = run.output.stdout.len() + run.output.stderr.len();
    assert_eq!(kept, 64 * 1024);
    assert!(run.output.stdout_truncated, "stdout not marked truncated");
    assert!(run.elapsed < SLACK, "took {:?}", run.elapsed);
}

/// Cancelling a running job stops it quickly.
pub async fn cancellation(backend: &dyn Backend) {
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let run = run_with(
        backend,
        limited(argv_job(&["sleep", "60"]), hostile_limits()),
        cancel,
    )
    .await;
    assert_eq!(run.execution.ending, Ending::Cancelled, "{run:?}");
    assert!(
        run.elapsed < Duration::from_millis(300) + SLACK,
        "took {:?}",
        run.elapsed
    );
}

/// A background process started by a job that times out is killed with it.
pub async fn no_process_left_behind(backend: &dyn Backend) {
    let marker = marker("orphan");
    let code = format!("(exec -a {marker} sleep 600) &\necho started\nwhile :; do sleep 1; done\n");
    let limits = Limits {
        timeout: Some(DurationMs::secs(1)),
        ..hostile_limits()
    };
    let run = run(backend, limited(code_job("bash", &code, &[]), limits)).await;
    assert_eq!(run.execution.ending, Ending::Timeout, "{run:?}");
    assert_eq!(run.stdout(), "started\n");
    assert_no_process_with(backend, &marker).await;
}
