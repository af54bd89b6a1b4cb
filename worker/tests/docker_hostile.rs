//! Hostile code in Docker sandboxes: each attack gets its verdict, nothing of it survives on
//! the host, and the backend keeps serving. Needs the host's dockerd and the sandbox image
//! (`deploy/setup.sh`); skipped without them outside CI.

use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use openshell_backend::{
    Backend, CapturedOutput, Ending, Execution, Job, JobControl, JobFile, OutputSink,
};
use openshell_backend_docker::DockerBackend;
use openshell_protocol::{ByteSize, DurationMs, ErrorKind, Limits};
use openshell_test_support::dockerd;
use tokio_util::sync::CancellationToken;

/// What came back from one job.
struct Run {
    execution: Execution,
    output: CapturedOutput,
    elapsed: Duration,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} after {:?}\nstdout: {}\nstderr: {}",
            self.execution,
            self.elapsed,
            self.stdout(),
            self.stderr()
        )
    }
}

fn limits() -> Limits {
    Limits {
        timeout: Some(DurationMs::secs(15)),
        memory: Some(ByteSize::mib(256)),
        processes: Some(64),
        output: Some(ByteSize::kib(256)),
        disk: Some(ByteSize::mib(8)),
        ..Limits::default()
    }
}

fn script(language: &str, code: &str, limits: Limits) -> Job {
    let (program, file) = match language {
        "python" => ("python3", "main.py"),
        _ => ("bash", "main.sh"),
    };
    Job {
        id: format!("hostile-{}", std::process::id()),
        tenant: "hostile".into(),
        language: Some(language.into()),
        argv: vec![program.into(), file.into()],
        stdin: Default::default(),
        env: Default::default(),
        files: vec![JobFile {
            path: file.parse().expect("a relative path"),
            content: code.as_bytes().to_vec(),
            mode: 0o644,
        }],
        limits,
        network: false,
        egress: None,
        outputs: None,
    }
}

async fn run(backend: &DockerBackend, job: Job) -> Run {
    let control = JobControl {
        cancel: CancellationToken::new(),
        output: OutputSink::new(job.limits.output.map_or(u64::MAX, ByteSize::bytes)),
    };
    let started = Instant::now();
    let execution = backend
        .execute(job, control.clone())
        .await
        .unwrap_or_else(|error| panic!("the backend failed: {error}"));
    Run {
        execution,
        output: control.output.snapshot(),
        elapsed: started.elapsed(),
    }
}

/// The backend still runs an ordinary job afterwards.
async fn still_serving(backend: &DockerBackend) {
    let run = run(backend, script("bash", "echo still serving", limits())).await;
    assert_eq!(run.execution.ending, Ending::Exited, "{run:?}");
    assert_eq!(run.stdout(), "still serving\n", "{run:?}");
}

/// Host processes whose command line contains `marker`.
fn host_processes(marker: &str) -> String {
    let output = Command::new("pgrep")
        .args(["-af", marker])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.contains("pgrep"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn assert_gone_from_host(marker: &str) {
    for _ in 0..50 {
        if host_processes(marker).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "processes of the job survived on the host:\n{}",
        host_processes(marker)
    );
}

fn marker(name: &str) -> String {
    format!("openshell-hostile-{name}-{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread")]
async fn fork_bomb_is_contained_by_the_pids_limit() {
    let Some(backend) = dockerd::backend(&dockerd::pool_name("fork"), 1) else {
        return;
    };
    let marker = marker("fork");
    let code = format!("bomb() {{ bomb | bomb & }}\nbomb\nwait\nsleep 30 # {marker}\n");
    let run = run(
        &backend,
        Job {
            argv: vec!["bash".into(), "main.sh".into(), marker.clone()],
            limits: Limits {
                timeout: Some(DurationMs::secs(5)),
                ..limits()
            },
            ..script("bash", &code, limits())
        },
    )
    .await;
    assert_eq!(run.execution.ending, Ending::Timeout, "{run:?}");
    assert!(run.elapsed < Duration::from_secs(9), "{run:?}");
    assert!(
        run.stderr().contains("fork") || run.stderr().contains("Resource"),
        "{run:?}"
    );
    assert_gone_from_host(&marker).await;
    still_serving(&backend).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_bomb_ends_out_of_memory_with_its_peak() {
    let Some(backend) = dockerd::backend(&dockerd::pool_name("memory"), 1) else {
        return;
    };
    let code = "chunks = []\nfor _ in range(128):\n    chunks.append(b'\\x01' * (16 << 20))\nprint('survived')\n";
    let run = run(&backend, script("python", code, limits())).await;
    assert_eq!(run.execution.ending, Ending::OutOfMemory, "{run:?}");
    assert_eq!(run.execution.signal, Some(9), "{run:?}");
    assert!(!run.stdout().contains("survived"));
    let peak = run
        .execution
        .peak_memory_bytes
        .expect("peak memory from the cgroup");
    assert!(peak > 200 << 20 && peak <= 256 << 20, "peak {peak}");
    still_serving(&backend).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_is_killed_at_the_timeout_with_all_its_processes() {
    let Some(backend) = dockerd::backend(&dockerd::pool_name("loop"), 1) else {
        return;
    };
    let marker = marker("loop");
    let code = format!("(exec -a {marker} sleep 600) &\nwhile :; do :; done\n");
    let limits = Limits {
        timeout: Some(DurationMs::secs(2)),
        cpus: Some(0.5),
        ..limits()
    };
    let run = run(&backend, script("bash", &code, limits)).await;
    assert_eq!(run.execution.ending, Ending::Timeout, "{run:?}");
    assert!(run.elapsed < Duration::from_secs(5), "{run:?}");
    // Half a core: the busy loop got about half the wall time, not all of it.
    let cpu = run.execution.cpu_time.expect("cpu time from the cgroup");
    assert!(
        cpu < Duration::from_millis(1600),
        "cpu {cpu:?} for 0.5 cpus over 2s"
    );
    assert_gone_from_host(&marker).await;
    still_serving(&backend).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stdout_flood_is_cut_at_the_output_limit() {
    let Some(backend) = dockerd::backend(&dockerd::pool_name("flood"), 1) else {
        return;
    };
    let limits = Limits {
        output: Some(ByteSize::kib(64)),
        ..limits()
    };
    let run = run(&backend, script("bash", "yes flood", limits)).await;
    assert_eq!(run.execution.ending, Ending::OutputLimit, "{run:?}");
    assert_eq!(run.output.stdout.len() + run.output.stderr.len(), 64 << 10);
    assert!(run.output.stdout_truncated);
    assert!(run.elapsed < Duration::from_secs(3), "{run:?}");
    still_serving(&backend).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn filling_tmp_and_the_workdir_stops_at_the_disk_limit() {
    let Some(backend) = dockerd::backend(&dockerd::pool_name("disk"), 1) else {
        return;
    };
    let code = "for dir in /tmp .; do\n  for i in $(seq 1 32); do\n    head -c 1048576 /dev/zero > $dir/fill$i 2>/dev/null || { echo \"$dir full at $i\"; break; }\n  done\ndone\ndu -sk /tmp . | cut -f1\n";
    let run = run(&backend, script("bash", code, limits())).await;
    assert_eq!(run.execution.exit_code, Some(0), "{run:?}");
    let lines: Vec<&str> = run
        .output
        .stdout
        .split(|&b| b == b'\n')
        .map(|line| std::str::from_utf8(line).unwrap_or(""))
        .collect();
    assert!(
        lines[0].starts_with("/tmp full at") && lines[1].starts_with(". full at"),
        "{run:?}"
    );
    for used in &lines[2..4] {
        let kib: u64 = used.parse().expect("du output");
        assert!(kib <= 8 * 1024, "{kib} KiB used with an 8 MiB disk limit");
    }
    still_serving(&backend).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_root_filesystem_is_read_only() {
    let Some(backend) = dockerd::backend(&dockerd::pool_name("rootfs"), 1) else {
        return;
    };
    let code = "for path in /evil /etc/evil /usr/bin/evil /home/evil; do\n  touch $path 2>&1 || true\ndone\necho x >> /etc/passwd || true\nls /evil /etc/evil 2>/dev/null | wc -l\n";
    let run = run(&backend, script("bash", code, limits())).await;
    assert_eq!(run.execution.exit_code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout().matches("Read-only file system").count(),
        4,
        "{run:?}"
    );
    assert!(
        run.stderr().contains("Read-only file system")
            || run.stderr().contains("Permission denied"),
        "{run:?}"
    );
    assert!(run.stdout().ends_with("0\n"), "{run:?}");
    still_serving(&backend).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_files_and_processes_are_out_of_sight() {
    let Some(backend) = dockerd::backend(&dockerd::pool_name("host"), 1) else {
        return;
    };
    let secret = std::env::temp_dir().join(format!("openshell-secret-{}", std::process::id()));
    std::fs::write(&secret, "host secret").expect("write the host file");
    let code = format!(
        "cat {} 2>&1 || true\ncat /etc/shadow 2>&1 || true\nid -u\nls -d /proc/[0-9]* | wc -l\n",
        secret.display()
    );
    let run = run(&backend, script("bash", &code, limits())).await;
    std::fs::remove_file(&secret).ok();
    let out = run.stdout();
    assert!(!out.contains("host secret"), "{run:?}");
    assert!(
        out.contains("No such file or directory") && out.contains("Permission denied"),
        "{run:?}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[lines.len() - 2],
        "1000",
        "jobs run as the sandbox user: {run:?}"
    );
    let processes: usize = lines[lines.len() - 1]
        .trim()
        .parse()
        .expect("process count");
    assert!(
        processes < 10,
        "the job sees {processes} processes: {run:?}"
    );
    still_serving(&backend).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_network_is_unreachable() {
    let Some(backend) = dockerd::backend(&dockerd::pool_name("net"), 1) else {
        return;
    };
    // A server on the host's loopback: the sandbox's loopback is its own, so it cannot reach it.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("address").port();
    let code = format!(
        "import os, socket\nprint(sorted(os.listdir('/sys/class/net')))\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('reached the host')\nexcept OSError as error:\n    print('unreachable', type(error).__name__)\n"
    );
    let run = run(&backend, script("python", &code, limits())).await;
    assert_eq!(
        run.stdout(),
        "['lo']\nunreachable ConnectionRefusedError\n",
        "{run:?}"
    );
    drop(listener);
    still_serving(&backend).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docker_socket_is_not_there() {
    let Some(backend) = dockerd::backend(&dockerd::pool_name("socket"), 1) else {
        return;
    };
    let code = "import socket\nfor path in ('/var/run/docker.sock', '/run/docker.sock', '/run/containerd/containerd.sock'):\n    s = socket.socket(socket.AF_UNIX)\n    try:\n        s.connect(path)\n        print('connected to', path)\n    except OSError as error:\n        print(type(error).__name__)\n";
    let run = run(&backend, script("python", code, limits())).await;
    assert_eq!(run.stdout(), "FileNotFoundError\n".repeat(3), "{run:?}");
    still_serving(&backend).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_pid_1_only_ends_the_jobs_own_sandbox() {
    let Some(backend) = dockerd::backend(&dockerd::pool_name("pid1"), 1) else {
        return;
    };
    // SIGKILL to a namespace's init from inside is ignored by the kernel; SIGTERM reaches the
    // init, which ends the resident runner and so the container, and the job with it.
    let code = "kill -KILL 1 2>&1; echo after-kill\nkill -TERM 1 2>&1\nsleep 5\necho survived\n";
    let run = run(&backend, script("bash", code, limits())).await;
    assert!(run.stdout().starts_with("after-kill\n"), "{run:?}");
    assert!(!run.stdout().contains("survived"), "{run:?}");
    assert_ne!(run.execution.exit_code, Some(0), "{run:?}");
    assert!(run.elapsed < Duration::from_secs(5), "{run:?}");
    still_serving(&backend).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_job_ends_with_its_program_not_with_its_output() {
    let Some(backend) = dockerd::backend(&dockerd::pool_name("escape"), 1) else {
        return;
    };
    // A background process keeps the output open: the job still ends with its program.
    let run_escaped = run(
        &backend,
        script("bash", "sleep 600 &\necho done\n", limits()),
    )
    .await;
    assert_eq!(
        run_escaped.execution.ending,
        Ending::Exited,
        "{run_escaped:?}"
    );
    assert_eq!(run_escaped.execution.exit_code, Some(0), "{run_escaped:?}");
    assert_eq!(run_escaped.stdout(), "done\n");
    assert!(
        run_escaped.stderr().contains("output was still open"),
        "{run_escaped:?}"
    );
    assert!(
        run_escaped.elapsed < Duration::from_secs(6),
        "{run_escaped:?}"
    );
    // A program that closes its output keeps running until it exits.
    let code = "exec >&- 2>&-\nsleep 2\nexit 4\n";
    let run_closed = run(&backend, script("bash", code, limits())).await;
    assert_eq!(run_closed.execution.exit_code, Some(4), "{run_closed:?}");
    assert!(
        run_closed.execution.wall_time >= Duration::from_secs(2),
        "{run_closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_without_a_shell_fails_to_start_saying_what_it_lacks() {
    if !dockerd::available() {
        return;
    }
    // An empty image of this test's own, removed at the end.
    let image = format!("openshell-test-noshell:{}", std::process::id());
    let empty = tempfile::NamedTempFile::new().expect("a temporary file");
    // An empty tar archive: its two zero end blocks.
    std::fs::write(empty.path(), [0u8; 1024]).expect("an empty tar");
    let path = empty.path().to_str().expect("a UTF-8 path");
    dockerd::docker(None, &["import", path, &image]).expect("docker import");
    let mut settings = dockerd::settings(1, None);
    settings.image = image.clone();
    let name = dockerd::pool_name("noshell");
    let backend = DockerBackend::new(settings, &dockerd::context(&name)).expect("backend");
    let job = script("sh", "echo never\n", limits());
    let control = JobControl {
        cancel: CancellationToken::new(),
        output: OutputSink::new(1 << 20),
    };
    let result = backend.execute(job, control).await;
    drop(backend);
    let _ = dockerd::docker(None, &["rmi", "-f", &image]);
    let error = result.expect_err("a job in an image without a shell");
    assert_eq!(error.kind, ErrorKind::SandboxStartFailed, "{error}");
    assert!(
        error.message.contains("cannot run OpenShell's runner")
            && error.message.contains("/bin/sh"),
        "{error}"
    );
}
