//! The local backend end to end, for what the shared conformance suite does not cover: V8
//! under the memory limit, the ENOEXEC fallback, dropped jobs, and directory removal.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::FutureExt;
use openshell_protocol::{ByteSize, DurationMs, LimitName, Limits, Payload};
use tokio_util::sync::CancellationToken;

use super::{LocalBackend, LocalSettings};
use openshell_backend::language as languages;
use openshell_backend::{Backend, Ending, Execution, Job, JobControl, JobFile, OutputSink};

fn limits(memory_mib: u64) -> Limits {
    Limits {
        timeout: Some(DurationMs::secs(30)),
        output: Some(ByteSize::mib(1)),
        memory: Some(ByteSize::mib(memory_mib)),
        processes: Some(256),
        ..Limits::default()
    }
}

fn job(language: &str, code: &str, limits: Limits) -> Job {
    let (argv, file) = languages::builtin()[language].resolve(code, &[]);
    Job {
        id: format!("local-test-{language}"),
        tenant: "test".to_string(),
        language: Some(language.to_string()),
        argv,
        stdin: Payload::default(),
        env: BTreeMap::new(),
        files: vec![file],
        limits,
        network: false,
        egress: None,
        outputs: None,
    }
}

async fn run(backend: &LocalBackend, job: Job) -> (Execution, String, String) {
    let control = JobControl {
        cancel: CancellationToken::new(),
        output: OutputSink::new(1 << 20),
    };
    let execution = backend
        .execute(job, control.clone())
        .await
        .expect("the job ran");
    let output = control.output.snapshot();
    (
        execution,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn backend() -> LocalBackend {
    LocalBackend::new(LocalSettings::default()).expect("local backend")
}

#[tokio::test(flavor = "multi_thread")]
async fn node_starts_under_the_memory_limit() {
    let backend = backend();
    let code = "console.log('hello from node')";
    let (execution, stdout, stderr) = run(&backend, job("node", code, limits(256))).await;
    assert_eq!(execution.ending, Ending::Exited, "{execution:?}\n{stderr}");
    assert_eq!(execution.exit_code, Some(0), "{stderr}");
    assert_eq!(stdout, "hello from node\n");
    let memory = &execution.enforcement[&LimitName::Memory];
    // Per process (RLIMIT_DATA, which V8's reservations fit under), or the job's cgroup.
    assert!(
        memory.mechanism.contains("RLIMIT_DATA") || memory.mechanism.contains("memory cgroup"),
        "{memory:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn node_buffer_and_heap_bombs_are_out_of_memory() {
    let backend = backend();
    for code in [
        "const a = []; while (true) a.push(Buffer.alloc(1e7, 1));",
        "const a = []; while (true) a.push(new Array(1e6).fill(1.5));",
    ] {
        let (execution, stdout, stderr) = run(&backend, job("node", code, limits(256))).await;
        assert_eq!(
            execution.ending,
            Ending::OutOfMemory,
            "{code}: {execution:?}\n{stdout}\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_without_a_shebang_runs_under_sh() {
    let backend = backend();
    let job = Job {
        argv: vec!["./plain".to_string(), "arg".to_string()],
        files: vec![JobFile {
            path: "plain".parse().expect("a relative path"),
            content: b"echo \"plain $1\"\n".to_vec(),
            mode: 0o755,
        }],
        ..job("sh", "", limits(64))
    };
    let (execution, stdout, stderr) = run(&backend, job).await;
    assert_eq!(execution.exit_code, Some(0), "{execution:?}\n{stderr}");
    assert_eq!(stdout, "plain arg\n");
}

/// Whether a process whose command line contains `marker` is alive.
fn alive_with(marker: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline"))
            .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_running_job_kills_and_reaps_it() {
    let backend = backend();
    let marker = format!("openshell-local-drop-{}", std::process::id());
    let code = format!("(exec -a {marker}-child sleep 60) & exec -a {marker} sleep 60");
    let control = JobControl {
        cancel: CancellationToken::new(),
        output: OutputSink::new(1 << 20),
    };
    let running = backend.execute(job("bash", &code, limits(64)), control);
    let dropped = tokio::time::timeout(Duration::from_millis(500), running).await;
    assert!(dropped.is_err(), "the job should still have been running");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive_with(&marker) {
        assert!(
            Instant::now() < deadline,
            "the dropped job's processes survived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_working_directory_is_removed_after_the_job() {
    let root = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(LocalSettings {
        work_root: Some(root.path().to_path_buf()),
        ..LocalSettings::default()
    })
    .unwrap();
    let code = "mkdir -p a/b && echo x > a/b/c && echo x > \"$TMPDIR/t\" && pwd";
    let (execution, stdout, stderr) = run(&backend, job("sh", code, limits(64))).await;
    assert_eq!(execution.exit_code, Some(0), "{stderr}");
    assert!(
        stdout.starts_with(&root.path().display().to_string()),
        "{stdout}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_dir(root.path()).unwrap().next().is_some() {
        assert!(Instant::now() < deadline, "the working directory stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// As root with bubblewrap (always under CI, whose setup installs it), a job sees its own
/// namespaces: its own processes only, its own hostname and network, the dedicated user, and
/// no user namespaces or keyrings.
#[tokio::test(flavor = "multi_thread")]
async fn a_root_worker_with_bubblewrap_sandboxes_each_job() {
    let backend = backend();
    if backend.sandbox.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root with bubblewrap installed: the local backend must sandbox"
        );
        return;
    }
    let code = r#"
echo "uid $(id -un)"
echo "host $(hostname)"
echo "pids $(ls -d /proc/[0-9]* | wc -l)"
echo "links $(ls /sys/class/net 2>/dev/null | wc -l) $(cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')"
echo "home $([ -e /home ] && echo visible || echo hidden)"
python3 -c 'import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); keyctl = {"x86_64": 250, "aarch64": 219}[os.uname().machine]; print("keyctl", libc.syscall(keyctl, 0, -4, 0) == -1 and ctypes.get_errno())'
"#;
    let (execution, stdout, stderr) = run(&backend, job("bash", code, limits(256))).await;
    assert_eq!(execution.exit_code, Some(0), "{execution:?}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "uid openshell-job", "{stdout}");
    assert_eq!(lines[1], "host openshell", "{stdout}");
    // pid 1, bash, and the command substitution's own processes: a handful, not the host's.
    let pids: usize = lines[2].trim_start_matches("pids ").parse().unwrap();
    assert!(pids < 10, "the job sees {pids} processes: {stdout}");
    assert!(lines[3].ends_with("lo "), "more than loopback: {stdout}");
    assert_eq!(lines[4], "home hidden", "{stdout}");
    assert_eq!(
        lines[5], "keyctl 1",
        "keyrings are refused with EPERM: {stdout}"
    );
}

/// A job the pool lets use the network shares the host's (no network namespace): it reaches a
/// port on the host's loopback.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_granted_network_reaches_the_host() {
    let backend = backend();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = format!(
        "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5).close()\nprint('connected')\n"
    );
    let job = Job {
        network: true,
        ..job("python", &code, limits(256))
    };
    let (execution, stdout, stderr) = run(&backend, job).await;
    assert_eq!(execution.exit_code, Some(0), "{execution:?}\n{stderr}");
    assert_eq!(stdout, "connected\n");
}

/// With `uids`, each running job has a uid of its own, so one job's processes do not count
/// against another's process limit (as they do when jobs share `openshell-job`).
#[tokio::test(flavor = "multi_thread")]
async fn with_a_uid_range_concurrent_jobs_have_their_own_uids_and_process_limits() {
    let locks_free_range = super::UidRange {
        first: 1_900_000_000 + std::process::id() % 1000 * 16,
        count: 4,
    };
    let settings = LocalSettings {
        uids: Some(locks_free_range),
        ..LocalSettings::default()
    };
    let backend = match LocalBackend::new(settings) {
        Ok(backend) => backend,
        Err(error) if backend().sandbox.is_none() => {
            // Without the sandbox a range is refused, and says why.
            assert!(
                error.to_string().contains("needs the bubblewrap sandbox"),
                "{error}"
            );
            return;
        }
        Err(error) => panic!("{error}"),
    };
    let few = |code: &str| Job {
        limits: Limits {
            processes: Some(16),
            ..limits(256)
        },
        ..job("bash", code, limits(256))
    };
    let holder = few("id -u\nfor i in $(seq 12); do sleep 60 & done\necho ready\nwait\n");
    let holder_control = JobControl {
        cancel: CancellationToken::new(),
        output: OutputSink::new(1 << 20),
    };
    let second = async {
        while !String::from_utf8_lossy(&holder_control.output.snapshot().stdout).contains("ready") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ran = run(
            &backend,
            few("id -u\nfor i in $(seq 8); do sleep 0.2 & done\nwait && echo forked"),
        )
        .await;
        holder_control.cancel.cancel();
        ran
    };
    let (holder_ran, (execution, stdout, stderr)) = tokio::join!(
        backend.execute(holder, holder_control.clone()),
        tokio::time::timeout(Duration::from_secs(60), second)
            .map(|ran| ran.expect("the holder job never got ready"))
    );
    assert_eq!(holder_ran.unwrap().ending, Ending::Cancelled);
    assert_eq!(execution.exit_code, Some(0), "{execution:?}\n{stderr}");
    assert!(stdout.ends_with("forked\n"), "{stdout}\n{stderr}");
    let holder_uid = String::from_utf8_lossy(&holder_control.output.snapshot().stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let own_uid = stdout.lines().next().unwrap_or_default();
    assert_ne!(holder_uid, own_uid, "both jobs ran as uid {own_uid}");
    let processes = &execution.enforcement[&LimitName::Processes];
    // RLIMIT_NPROC of the job's own uid, or the job's pids cgroup: either way not shared.
    assert!(
        processes.mechanism.contains("job's own uid")
            || processes.mechanism.contains("pids cgroup"),
        "{processes:?}"
    );
}
