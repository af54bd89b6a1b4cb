//! Hostile code at once (fork bomb, memory bomb, infinite loop, output flood) is contained by
//! the limits on the host, and the backend keeps serving.

use std::time::{Duration, Instant};

use openshell_backend::{Ending, Job};
use openshell_protocol::{ByteSize, DurationMs};
use tokio_util::sync::CancellationToken;

use openshell_test_support::jobs::{bash_job, marker, run};
use openshell_test_support::process::processes_with;
use openshell_test_support::sshd::SshdBackend;

fn python(code: &str) -> Job {
    let mut job = bash_job("");
    job.argv = vec!["python3".into(), "main.py".into()];
    job.files[0].path = "main.py".parse().expect("a relative path");
    job.files[0].content = code.as_bytes().to_vec();
    job
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_jobs_together_are_contained_and_the_backend_keeps_serving() {
    let Some(ssh) = SshdBackend::start().await else {
        return;
    };
    let bomb_marker = marker("bomb");
    let mut fork_bomb = bash_job(&format!(
        ": {bomb_marker}\nbomb() {{ bomb | bomb & }}\nbomb\nwait\nsleep 30\n"
    ));
    fork_bomb.argv.push(bomb_marker.clone());
    fork_bomb.limits.processes = Some(64);
    fork_bomb.limits.timeout = Some(DurationMs::secs(5));
    let mut memory_bomb =
        python("chunks = []\nwhile True:\n    chunks.append(b'\\x01' * (16 << 20))\n");
    memory_bomb.limits.memory = Some(ByteSize::mib(256));
    let mut spin = bash_job("while :; do :; done");
    spin.limits.timeout = Some(DurationMs::secs(2));
    spin.limits.cpu_time = Some(DurationMs::secs(1));
    let mut flood = bash_job("cat /dev/zero");
    flood.limits.output = Some(ByteSize::kib(256));
    let started = Instant::now();
    let backend = &ssh.backend;
    let (bomb, memory, spin, flood) = tokio::join!(
        run(backend, fork_bomb, CancellationToken::new()),
        run(backend, memory_bomb, CancellationToken::new()),
        run(backend, spin, CancellationToken::new()),
        run(backend, flood, CancellationToken::new()),
    );
    let bomb = bomb.0.expect("fork bomb ran");
    assert!(
        bomb.ending != Ending::Exited || bomb.exit_code != Some(0),
        "{bomb:?}"
    );
    assert_eq!(
        memory.0.expect("memory bomb ran").ending,
        Ending::OutOfMemory,
        "{}",
        String::from_utf8_lossy(&memory.1.stderr)
    );
    let spin = spin.0.expect("loop ran");
    // RLIMIT_CPU (SIGXCPU after 1 s of CPU) or the 2 s wall timeout, whichever comes first.
    assert!(
        spin.signal.is_some() || spin.ending == Ending::Timeout,
        "{spin:?}"
    );
    assert_eq!(flood.0.expect("flood ran").ending, Ending::OutputLimit);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with(&bomb_marker).is_empty() {
        assert!(Instant::now() < deadline, "fork bomb processes survived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (after, output) = run(
        backend,
        bash_job("echo still serving"),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(after.expect("ran").exit_code, Some(0));
    assert_eq!(output.stdout, b"still serving\n");
}
