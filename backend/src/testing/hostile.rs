//! Cases for hostile jobs: they must be stopped, nothing of them may survive, and they may not
//! reach the host's network, another job, or the next job.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{Backend, Ending, Job, JobControl, OutputSink};
use openshell_protocol::{ByteSize, DurationMs, EnforcementStatus, LimitName, Limits};
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

/// How long a case waits for something that must happen (a concurrent job to start), before
/// failing: a bound on waiting, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(60);

/// A job cannot reach a TCP port the test opens on the host's loopback: without `network` it
/// has only a loopback of its own (or none).
pub async fn network_to_a_host_loopback_port_fails(backend: &dyn Backend) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    let port = listener.local_addr().expect("the port").port();
    let code = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=5).close()\n    \
         print('connected')\nexcept OSError as error:\n    print('failed', type(error).__name__)\n"
    );
    let run = run(
        backend,
        limited(code_job("python", &code, &[]), hostile_limits()),
    )
    .await;
    assert_exited(&run, 0);
    assert!(run.stdout().starts_with("failed"), "{}", run.stdout());
    match listener.accept() {
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the job reached the host's loopback port: {other:?}"),
    }
}

/// A double-forked `setsid` process, one holding stdout open and one not, dies with the job,
/// and the verdict is the job's own: a program that exited 0 is not a timeout.
pub async fn setsid_survivors_die_and_do_not_decide_the_verdict(backend: &dyn Backend) {
    let (held, detached) = (marker("setsid-held"), marker("setsid-detached"));
    let code = format!(
        "( setsid bash -c 'exec -a {held} sleep 600' & )\n\
         ( setsid bash -c 'exec -a {detached} sleep 600' >/dev/null 2>&1 </dev/null & )\n\
         echo started\nexit 0\n"
    );
    let run = run(
        backend,
        limited(code_job("bash", &code, &[]), hostile_limits()),
    )
    .await;
    assert_exited(&run, 0);
    assert!(run.stdout().starts_with("started\n"), "{run:?}");
    assert_no_process_with(backend, &held).await;
    assert_no_process_with(backend, &detached).await;
}

/// Removes, on drop, what a job could have left in the host's shared temporary directories
/// had it not had its own.
struct HostLeftovers(Vec<std::path::PathBuf>);

impl Drop for HostLeftovers {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Files a job leaves in /tmp, /var/tmp, /dev/shm and its home are gone for the next job, and
/// never reached the host's own directories.
pub async fn nothing_is_left_for_the_next_job(backend: &dyn Backend) {
    let name = marker("leftover");
    let dirs = ["/tmp", "/var/tmp", "/dev/shm"];
    let _guard = HostLeftovers(
        dirs.iter()
            .map(|dir| format!("{dir}/{name}").into())
            .collect(),
    );
    let write = format!(
        "for d in /tmp /var/tmp /dev/shm \"$HOME\"; do echo secret > \"$d/{name}\" 2>/dev/null && echo \"wrote $d\"; done\n"
    );
    let first = run(
        backend,
        limited(code_job("sh", &write, &[]), hostile_limits()),
    )
    .await;
    assert_exited(&first, 0);
    assert!(first.stdout().contains("wrote /tmp"), "{first:?}");
    let read = format!(
        "for d in /tmp /var/tmp /dev/shm \"$HOME\"; do [ -e \"$d/{name}\" ] && echo \"found $d\"; done\necho checked\n"
    );
    let next = run(
        backend,
        limited(code_job("sh", &read, &[]), hostile_limits()),
    )
    .await;
    assert_exited(&next, 0);
    assert_eq!(
        next.stdout(),
        "checked\n",
        "the next job found the first job's files"
    );
    for dir in dirs {
        let path = std::path::Path::new(dir).join(&name);
        assert!(
            !path.exists(),
            "the job wrote the host's {}",
            path.display()
        );
    }
}

/// A job cannot find a concurrent job's environment (nor its command line) in /proc: the
/// secret of a running job of another tenant is in no /proc/PID/environ it can read.
pub async fn a_concurrent_jobs_environ_is_out_of_reach(backend: &dyn Backend) {
    let secret = marker("environ-secret");
    let mut victim = limited(
        code_job("bash", "echo ready\nexec sleep 60\n", &[]),
        hostile_limits(),
    );
    victim.tenant = "victim".to_string();
    victim.env = BTreeMap::from([("OPENSHELL_SECRET".to_string(), secret.clone())]);
    let victim_control = JobControl {
        cancel: CancellationToken::new(),
        output: OutputSink::new(1 << 20),
    };
    // The attacker gets the secret in two halves, so no process of its own carries it whole.
    let (front, back) = secret.split_at(secret.len() / 2);
    let search = r#"m="$1$2"
found=""
for p in /proc/[0-9]*; do
  for f in environ cmdline; do
    [ -r "$p/$f" ] || continue
    while IFS= read -r -d '' item; do
      case "$item" in *"$m"*) found="$found ${p#/proc/}/$f" ;; esac
    done < "$p/$f" 2>/dev/null
  done
done
echo "found:$found"
"#;
    let mut attacker = limited(code_job("bash", search, &[front, back]), hostile_limits());
    attacker.tenant = "attacker".to_string();
    let attack = async {
        let waited = tokio::time::timeout(PATIENCE, async {
            while !victim_control
                .output
                .snapshot()
                .stdout
                .starts_with(b"ready")
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let attacked = match waited {
            Ok(()) => Some(run(backend, attacker).await),
            Err(_) => None,
        };
        victim_control.cancel.cancel();
        attacked
    };
    let (victim_ran, attacked) = tokio::join!(
        backend.execute(victim.clone(), victim_control.clone()),
        attack
    );
    let victim_ran = victim_ran.expect("the victim job ran");
    let attacked = attacked.unwrap_or_else(|| panic!("the victim never started: {victim_ran:?}"));
    assert_exited(&attacked, 0);
    assert_eq!(
        attacked.stdout(),
        "found:\n",
        "the attacker read the victim's secret"
    );
    assert_eq!(victim_ran.ending, Ending::Cancelled, "{victim_ran:?}");
}

/// A job cannot make a user namespace (in which it would be root, and reach kernel code that
/// root-only paths guard).
pub async fn user_namespaces_are_refused(backend: &dyn Backend) {
    let code = "import ctypes, os\n\
                libc = ctypes.CDLL(None, use_errno=True)\n\
                if libc.unshare(0x10000000) == 0:\n    print('allowed')\n\
                else:\n    print('refused:', os.strerror(ctypes.get_errno()))\n";
    let run = run(
        backend,
        limited(code_job("python", code, &[]), hostile_limits()),
    )
    .await;
    assert_exited(&run, 0);
    assert!(run.stdout().starts_with("refused:"), "{run:?}");
}

/// Whether `backend` enforces `limit` for all of a job's processes together (not only per
/// process): the whole-job cases below hold it to that, and state what they skip otherwise.
/// Asked after a health check, which is what refreshes capabilities (a Docker engine's).
async fn enforces_for_the_whole_job(backend: &dyn Backend, limit: LimitName) -> bool {
    if let Err(error) = backend.health().await {
        panic!("{} is not healthy: {error}", backend.kind());
    }
    let enforced = backend
        .capabilities()
        .get(&limit)
        .is_some_and(|entry| entry.status == EnforcementStatus::Enforced);
    if !enforced {
        eprintln!(
            "{} enforces {limit:?} per process only (its report says partial): whole-job case skipped",
            backend.kind()
        );
    }
    enforced
}

/// Four processes of 100 MiB each do not fit a 256 MiB limit together: not all four keep
/// their memory through the time they overlap, and the job fails. Each holds its memory for 10 s, so all four overlap even when a
/// loaded machine starts them seconds apart. Its verdict is `out_of_memory` where the backend sees the kernel kill
/// any of its processes (docker, none); the SSH helper reports the job's own exit (1 here:
/// its shell saw a child killed).
pub async fn memory_across_processes(backend: &dyn Backend) {
    if !enforces_for_the_whole_job(backend, LimitName::Memory).await {
        return;
    }
    let code = "pids=\nfor i in 1 2 3 4; do\n  python3 -c 'import time\nb = b\"\\x01\" * (100 << 20)\nprint(\"held\", flush=True)\ntime.sleep(10)\nprint(\"kept\", flush=True)' &\n  pids=\"$pids $!\"\ndone\n\
                failed=0\nfor pid in $pids; do wait $pid || failed=1; done\nexit $failed\n";
    let limits = Limits {
        memory: Some(ByteSize::mib(256)),
        ..hostile_limits()
    };
    let run = run(backend, limited(code_job("bash", code, &[]), limits)).await;
    let failed = run.execution.ending == Ending::OutOfMemory
        || (run.execution.ending == Ending::Exited && run.execution.exit_code == Some(1));
    assert!(failed, "{run:?}\nstderr: {}", run.stderr());
    // A process killed for the others may have printed `held` first; none killed prints
    // `kept` after holding its memory while the others held theirs.
    assert!(run.stdout().matches("kept").count() < 4, "{}", run.stdout());
}

/// Filling /dev/shm (memory, not disk) past the memory limit fails: shared memory counts.
pub async fn shared_memory_counts_as_memory(backend: &dyn Backend) {
    if !enforces_for_the_whole_job(backend, LimitName::Memory).await {
        return;
    }
    let code = "head -c 400M /dev/zero > /dev/shm/fill && echo filled\n";
    let limits = Limits {
        memory: Some(ByteSize::mib(256)),
        ..hostile_limits()
    };
    let run = run(backend, limited(code_job("bash", code, &[]), limits)).await;
    let succeeded = run.execution.ending == Ending::Exited && run.execution.exit_code == Some(0);
    assert!(
        !succeeded,
        "400 MiB fit in /dev/shm under a 256 MiB limit: {run:?}"
    );
    assert!(!run.stdout().contains("filled"), "{}", run.stdout());
    let after = super::run(backend, code_job("sh", "echo still fine", &[])).await;
    assert_exited(&after, 0);
}

/// Four busy processes share one `cpu_time` budget: forking does not multiply it. The job is
/// stopped with SIGXCPU long before its wall timeout.
pub async fn cpu_time_is_not_dodged_by_forking(backend: &dyn Backend) {
    if !enforces_for_the_whole_job(backend, LimitName::CpuTime).await {
        return;
    }
    let timeout = DurationMs::secs(30);
    let limits = Limits {
        timeout: Some(timeout),
        cpu_time: Some(DurationMs(2000)),
        ..hostile_limits()
    };
    let code = "for i in 1 2 3 4; do ( while :; do :; done ) & done\nwait\n";
    let run = run(backend, limited(code_job("bash", code, &[]), limits)).await;
    assert_eq!(run.execution.ending, Ending::Exited, "{run:?}");
    assert_eq!(run.execution.signal, Some(24), "not SIGXCPU: {run:?}");
    // Four processes with 2 s each would run for 8 s of CPU; one budget ends far sooner.
    assert!(
        run.elapsed < timeout.as_duration() / 2,
        "took {:?}",
        run.elapsed
    );
}
