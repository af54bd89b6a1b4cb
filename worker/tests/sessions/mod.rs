//! The session scenarios every backend that holds sessions passes, through a real
//! nats-server and `openshell worker`: `session_docker.rs`, `session_local.rs` and
//! `session_ssh.rs` run them on their backend. Include with `mod sessions;`.

// Each test binary uses some of these.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use openshell_protocol::session::{CloseReason, Kernel, SessionClosed, SessionOpen, SessionOpened};
use openshell_protocol::{
    Client, ClientError, DurationMs, ErrorKind, ExecRequest, Limits, Verdict,
};
use openshell_test_support::nats::NatsServer;
use openshell_test_support::sshd::Sshd;
use openshell_test_support::worker::WorkerProcess;
use openshell_test_support::{Openshell, dockerd, in_ci};

/// The binary under test.
pub const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

/// A backend the scenarios run on, and how to see its sandboxes from the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `SANDBOX_BACKEND=docker`: a container per session, found by its `openshell.job` label.
    Docker,
    /// `SANDBOX_BACKEND=none` with bubblewrap: a sandbox per session, found by its working
    /// directory (the processes in it, and bubblewrap's command line naming it).
    Local,
    /// `SANDBOX_BACKEND=ssh` on a test sshd on this machine: a held sandbox per session on
    /// the host, found by the session id that its helper's and bubblewrap's command lines and
    /// its record under /run/openshell-sandbox/sessions name (with their descendants).
    Ssh,
}

/// The sshd of the `Ssh` backend's worker, kept until [`stop_sshd`].
static SSHD: std::sync::Mutex<Vec<Sshd>> = std::sync::Mutex::new(Vec::new());

/// Stops the sshd a `Ssh` worker was started with.
pub fn stop_sshd() {
    SSHD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
}

/// Where the SSH host's sandbox helper records a held session.
const SSH_SESSIONS: &str = "/run/openshell-sandbox/sessions";

impl Backend {
    /// The pool the worker serves.
    pub fn pool(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Local => "none",
            Self::Ssh => "ssh",
        }
    }

    /// Whether the backend can hold sessions here; under CI a missing piece fails.
    pub fn available(self) -> bool {
        match self {
            Self::Docker => dockerd::available(),
            Self::Local => {
                let ready =
                    nix::unistd::Uid::effective().is_root() && Path::new("/usr/bin/bwrap").exists();
                assert!(
                    ready || !in_ci(),
                    "local sessions need a root worker with bubblewrap in CI"
                );
                ready
            }
            Self::Ssh => {
                let ready = nix::unistd::Uid::effective().is_root()
                    && ["/usr/sbin/sshd", "/usr/bin/bwrap", "/usr/bin/sudo"]
                        .iter()
                        .all(|tool| Path::new(tool).exists());
                assert!(
                    ready || !in_ci(),
                    "ssh sessions need root, sshd, sudo and bubblewrap in CI"
                );
                ready
            }
        }
    }

    /// A worker of this backend.
    pub async fn worker(self, nats: &NatsServer) -> WorkerProcess {
        let url = nats.url();
        match self {
            Self::Docker => {
                let image = dockerd::image();
                let envs = [
                    ("NATS_URL", url.as_str()),
                    ("SANDBOX_BACKEND", "docker"),
                    ("SANDBOX_DOCKER_IMAGE", image.as_str()),
                    ("SANDBOX_DOCKER_MEMORY", "256m"),
                    ("SANDBOX_DOCKER_CPUS", "1"),
                    ("LOG_LEVEL", "info"),
                ];
                OPENSHELL.worker(&envs).await
            }
            Self::Local => OPENSHELL.local_worker(nats, &[("LOG_LEVEL", "info")]).await,
            Self::Ssh => {
                let sshd = Sshd::start().await.expect("sshd starts");
                let ssh_env = sshd.worker_env();
                let mut envs = vec![("NATS_URL", url.as_str()), ("LOG_LEVEL", "info")];
                envs.extend(ssh_env.iter().map(|(name, value)| (*name, value.as_str())));
                let worker = OPENSHELL.worker(&envs).await;
                SSHD.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(sshd);
                worker
            }
        }
    }

    /// What of `session`'s sandbox is on the host: its containers, or its processes and
    /// working directory (`workdir`, as a job in it saw it).
    pub fn traces(self, session: &SessionOpened, workdir: &str) -> Vec<String> {
        match self {
            Self::Docker => {
                dockerd::containers_with(None, &format!("openshell.job={}", session.session))
            }
            Self::Local => {
                let mut traces: Vec<String> = processes_in(workdir)
                    .into_iter()
                    .map(|pid| format!("process {pid}"))
                    .collect();
                if Path::new(workdir).exists() {
                    traces.push(format!("directory {workdir}"));
                }
                traces
            }
            Self::Ssh => {
                let mut traces: Vec<String> = ssh_processes(&session.session)
                    .into_iter()
                    .map(|(pid, _)| format!("process {pid}"))
                    .collect();
                let record = Path::new(SSH_SESSIONS).join(&session.session);
                if record.exists() {
                    traces.push(format!("record {}", record.display()));
                }
                traces
            }
        }
    }

    /// Waits up to 10 s for nothing of `session`'s sandbox to be left.
    pub async fn assert_gone(self, session: &SessionOpened, workdir: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let traces = self.traces(session, workdir);
            if traces.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "session {} left {traces:?}",
                session.session
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills `session`'s sandbox behind the worker's back.
    pub fn kill_sandbox(self, session: &SessionOpened, workdir: &str) {
        match self {
            Self::Docker => {
                for id in self.traces(session, workdir) {
                    dockerd::docker(None, &["kill", &id]).expect("docker kill");
                }
            }
            Self::Local => {
                for pid in processes_in(workdir) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            Self::Ssh => {
                // bubblewrap: its pid 1 dies with it, and the namespace with that.
                for (pid, program) in ssh_processes(&session.session) {
                    if program.ends_with("bwrap") {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
        }
    }

    /// A killed worker (`pid`) cannot remove its sandboxes; the next worker's sweep would.
    /// Removes them here so that the test leaves nothing behind, and checks that the sandbox
    /// of each session it `held` (with its working directory) died with the worker.
    pub async fn after_kill(self, pid: u32, held: &[(SessionOpened, String)]) {
        match self {
            Self::Docker => {
                for id in dockerd::containers_with(None, &format!("openshell.pid={pid}")) {
                    let _ = dockerd::docker(None, &["rm", "-f", &id]);
                }
            }
            Self::Local => {
                // bubblewrap dies with its parent, and the sandbox with it; the directory stays.
                let deadline = Instant::now() + Duration::from_secs(10);
                for (session, workdir) in held {
                    while !processes_in(workdir).is_empty() {
                        assert!(Instant::now() < deadline, "a sandbox outlived its worker");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let _ = std::fs::remove_dir_all(workdir);
                    self.assert_gone(session, workdir).await;
                }
            }
            Self::Ssh => {
                // Its connections dropped: each host helper sees its stdin end and releases.
                for (session, workdir) in held {
                    self.assert_gone(session, workdir).await;
                }
            }
        }
    }
}

/// Live processes naming session `id` as an argument (the host's `sudo sandbox hold ID`,
/// the helper, bubblewrap), and their descendants (the sandbox's pid 1 and what runs in it),
/// with their programs.
fn ssh_processes(id: &str) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut fields = rest.split(' ');
        let zombie = fields.next() == Some("Z");
        let parent = fields
            .next()
            .and_then(|ppid| ppid.parse::<i32>().ok())
            .unwrap_or(0);
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = String::from_utf8_lossy(&cmdline)
            .split('\0')
            .map(str::to_string)
            .collect();
        let named = args.iter().any(|arg| arg == id);
        if !zombie {
            all.push((
                pid,
                parent,
                named,
                args.first().cloned().unwrap_or_default(),
            ));
        }
    }
    let mut found: Vec<i32> = all
        .iter()
        .filter(|(_, _, named, _)| *named)
        .map(|(pid, ..)| *pid)
        .collect();
    let mut grew = true;
    while grew {
        grew = false;
        for (pid, parent, ..) in &all {
            if found.contains(parent) && !found.contains(pid) {
                found.push(*pid);
                grew = true;
            }
        }
    }
    all.into_iter()
        .filter(|(pid, ..)| found.contains(pid))
        .map(|(pid, _, _, program)| (pid, program))
        .collect()
}

/// Live processes working in `workdir`, or naming it on their command line (bubblewrap).
fn processes_in(workdir: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let zombie = stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'));
            let cwd = std::fs::read_link(entry.path().join("cwd")).ok();
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let named = String::from_utf8_lossy(&cmdline)
                .split('\0')
                .any(|arg| arg == workdir);
            let working = cwd.is_some_and(|cwd| cwd == Path::new(workdir));
            (!zombie && (working || named)).then_some(pid)
        })
        .collect()
}

/// The session's working directory, as a job in it sees it.
pub async fn workdir_of(client: &Client, session: &SessionOpened) -> String {
    let pwd = run(
        client,
        session,
        &ExecRequest::command("pwd", vec!["pwd".into()]),
    )
    .await;
    assert_eq!(pwd.exit_code, Some(0), "{pwd:?}");
    pwd.stdout.to_text_lossy().trim().to_string()
}

pub fn python(id: &str, code: &str) -> ExecRequest {
    let mut request = ExecRequest::code(id, "python", code);
    request.limits = Limits {
        timeout: Some(DurationMs::secs(20)),
        ..Limits::default()
    };
    request
}

pub fn kernel_open(idle: Option<u64>) -> SessionOpen {
    SessionOpen {
        kernel: Some(Kernel::Python),
        idle: idle.map(DurationMs::secs),
        ..SessionOpen::default()
    }
}

pub fn session_error(error: ClientError) -> ErrorKind {
    match error {
        ClientError::Session { error, .. } => error.kind,
        other => panic!("not a session error: {other}"),
    }
}

pub async fn run(
    client: &Client,
    session: &SessionOpened,
    request: &ExecRequest,
) -> openshell_protocol::ExecResult {
    client
        .session_exec(session, request)
        .await
        .unwrap_or_else(|error| panic!("{}: {error}", request.id))
}

/// State and files persist across jobs, a stopped kernel cell restarts the kernel and says
/// so, one job runs at a time, another tenant cannot reach the session, the cap refuses the
/// next open, close leaves nothing, and a killed worker gives `session_lost` at once.
pub async fn keeps_state_and_files_and_ends_without_a_trace(backend: Backend) {
    if !backend.available() {
        return;
    }
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let mut worker = backend.worker(&nats).await;
    let client = Client::connect(&nats.url()).await.expect("client connects");
    let pool = backend.pool();
    let session = client
        .open_session(pool, "acme", &kernel_open(None))
        .await
        .expect("the session opens");
    let workdir = workdir_of(&client, &session).await;
    assert!(
        !backend.traces(&session, &workdir).is_empty(),
        "a sandbox holds the session"
    );

    // Interpreter state persists: x = 41, then x + 1.
    let first = run(&client, &session, &python("set", "x = 41\nimport math")).await;
    assert_eq!(first.status, Verdict::Completed, "{first:?}");
    assert_eq!(first.session.as_deref(), Some(session.session.as_str()));
    let second = run(
        &client,
        &session,
        &python("get", "print(x + 1)\nmath.sqrt(16)"),
    )
    .await;
    assert_eq!(second.stdout.to_text_lossy(), "42\n4.0\n", "{second:?}");

    // Files persist: written by a command, read by a cell.
    let write = ExecRequest::command(
        "write",
        vec!["sh".into(), "-c".into(), "echo kept > data.txt".into()],
    );
    assert_eq!(run(&client, &session, &write).await.exit_code, Some(0));
    let read = run(
        &client,
        &session,
        &python("read", "print(open('data.txt').read().strip())"),
    )
    .await;
    assert_eq!(read.stdout.to_text_lossy(), "kept\n", "{read:?}");

    // A job in a session has no cgroup of its own: its CPU time limit holds per process, and
    // its report does not claim more.
    let mut bounded = python("bounded", "print(1)");
    bounded.limits.cpu_time = Some(DurationMs::secs(5));
    let bounded = run(&client, &session, &bounded).await;
    assert_eq!(bounded.status, Verdict::Completed, "{bounded:?}");
    let cpu = &bounded.enforcement[&openshell_protocol::LimitName::CpuTime];
    assert_ne!(
        cpu.status,
        openshell_protocol::EnforcementStatus::Enforced,
        "{cpu:?}"
    );

    // Files come back from a session's job on Docker and `none`; SSH hosts cannot return them
    // from a session yet, and admission says so before anything runs.
    let mut collect = ExecRequest::command(
        "collect",
        vec!["sh".into(), "-c".into(), "echo out > result.txt".into()],
    );
    collect.outputs =
        vec![openshell_protocol::OutputPattern::parse("result.txt").expect("pattern")];
    let collected = run(&client, &session, &collect).await;
    if backend == Backend::Ssh {
        let error = collected.error.as_ref().expect("outputs refused");
        assert_eq!(error.kind, ErrorKind::LimitNotEnforceable, "{collected:?}");
        assert!(error.message.contains("session"), "{error:?}");
        assert_eq!(collected.exit_code, None, "{collected:?}");
    } else {
        assert_eq!(collected.status, Verdict::Completed, "{collected:?}");
        let files = collected.outputs.as_ref().expect("files returned");
        assert_eq!(files.files.len(), 1, "{files:?}");
    }

    // The session's sandbox has no network: a job asking for some is refused, not run offline.
    let mut online = python("online", "print(1)");
    online.network = openshell_protocol::NetworkAccess::All(true);
    let refused = run(&client, &session, &online).await;
    assert_eq!(
        refused.error.as_ref().map(|error| error.kind),
        Some(ErrorKind::NetworkNotAllowed),
        "{refused:?}"
    );

    // A cell that times out restarts the kernel and says so; the files stay.
    let mut spin = python("spin", "while True: pass");
    spin.limits.timeout = Some(DurationMs::secs(2));
    let spun = run(&client, &session, &spin).await;
    assert_eq!(spun.status, Verdict::Timeout, "{spun:?}");
    assert!(spun.kernel_restarted, "{spun:?}");
    let after = run(
        &client,
        &session,
        &python(
            "after",
            "print('x' in globals(), open('data.txt').read().strip())",
        ),
    )
    .await;
    assert_eq!(after.stdout.to_text_lossy(), "False kept\n", "{after:?}");
    assert!(!after.kernel_restarted, "{after:?}");

    // One job at a time: the second of two at once is refused as busy.
    let slow = python("slow", "import time\ntime.sleep(3)");
    let quick = python("quick", "print(1)");
    let (slow_result, quick_result) = tokio::join!(run(&client, &session, &slow), async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        run(&client, &session, &quick).await
    });
    assert_eq!(slow_result.status, Verdict::Completed, "{slow_result:?}");
    assert_eq!(quick_result.status, Verdict::Rejected, "{quick_result:?}");
    assert_eq!(
        quick_result.error.as_ref().map(|error| error.kind),
        Some(ErrorKind::SessionBusy)
    );

    // Another tenant cannot run in, or close, the session, even knowing its id.
    let stolen = SessionOpened {
        subject: client.subjects().session_run(
            &session.worker_id_token(),
            "globex",
            &session.session,
        ),
        close_subject: client.subjects().session_close(
            &session.worker_id_token(),
            "globex",
            &session.session,
        ),
        ..session.clone()
    };
    let theft = run(&client, &stolen, &python("theft", "print(x)")).await;
    assert_eq!(
        theft.error.as_ref().map(|error| error.kind),
        Some(ErrorKind::NotFound),
        "{theft:?}"
    );
    let close = client
        .close_session(&stolen)
        .await
        .expect_err("globex cannot close it");
    assert_eq!(session_error(close), ErrorKind::NotFound);

    // The cap: acme holds 4 sessions on the pool at most.
    let mut more = Vec::new();
    for _ in 0..3 {
        more.push(
            client
                .open_session(pool, "acme", &SessionOpen::default())
                .await
                .expect("under the cap"),
        );
    }
    let refused = client
        .open_session(pool, "acme", &SessionOpen::default())
        .await
        .expect_err("the fifth is over the cap");
    assert_eq!(session_error(refused), ErrorKind::SessionLimit);
    // Another tenant has its own cap.
    let theirs = client
        .open_session(pool, "globex", &SessionOpen::default())
        .await
        .expect("globex has its own cap");

    // Close: the container goes, the next call is refused as not found.
    let closed: SessionClosed = client.close_session(&session).await.expect("closes");
    assert_eq!(closed.reason, CloseReason::Closed);
    assert_eq!(closed.kernel_restarts, 1);
    assert!(closed.jobs >= 8, "{closed:?}");
    backend.assert_gone(&session, &workdir).await;
    let gone = run(&client, &session, &python("gone", "print(1)")).await;
    assert_eq!(
        gone.error.as_ref().map(|error| error.kind),
        Some(ErrorKind::NotFound)
    );

    // A killed worker: the next call gets session_lost at once, never a hang.
    let mut held = vec![(theirs.clone(), workdir_of(&client, &theirs).await)];
    for other in more {
        let workdir = workdir_of(&client, &other).await;
        held.push((other, workdir));
    }
    let pid = worker.pid().expect("the worker runs");
    worker.kill().await;
    let started = Instant::now();
    let lost = client
        .session_exec(&theirs, &python("lost", "print(1)"))
        .await
        .expect_err("the worker is gone");
    assert_eq!(session_error(lost), ErrorKind::SessionLost);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "session_lost took {:?}",
        started.elapsed()
    );
    backend.after_kill(pid, &held).await;
}

/// Idle expiry, a lost sandbox and shutdown destroy the sandbox (no container, no process,
/// no directory left) and tell the owner; an out-of-memory cell restarts the kernel; a Node
/// kernel keeps its globals; the command line opens, uses and closes a session.
pub async fn expiry_and_shutdown_destroy_the_sandbox_and_tell_the_owner(backend: Backend) {
    if !backend.available() {
        return;
    }
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let mut worker = backend.worker(&nats).await;
    let client = Client::connect(&nats.url()).await.expect("client connects");
    let pool = backend.pool();
    let idle = client
        .open_session(pool, "acme", &kernel_open(Some(1)))
        .await
        .expect("opens");
    let workdir = workdir_of(&client, &idle).await;
    let mut ended = client
        .nats()
        .subscribe(client.subjects().session_ended("acme", &idle.session))
        .await
        .expect("subscribes");
    let background = ExecRequest::command(
        "background",
        vec![
            "sh".into(),
            "-c".into(),
            "sleep 300 >/dev/null 2>&1 &".into(),
        ],
    );
    run(&client, &idle, &background).await;
    let told = tokio::time::timeout(
        Duration::from_secs(10),
        futures::StreamExt::next(&mut ended),
    )
    .await
    .expect("the owner is told within 10s")
    .expect("a message");
    let closed: SessionClosed = serde_json::from_slice(&told.payload).expect("a SessionClosed");
    assert_eq!(closed.reason, CloseReason::Idle);
    backend.assert_gone(&idle, &workdir).await;
    let gone = run(&client, &idle, &python("late", "print(1)")).await;
    assert_eq!(
        gone.error.as_ref().map(|error| error.kind),
        Some(ErrorKind::NotFound)
    );

    // Out of memory in a kernel cell: the kernel restarts and says so, the session goes on.
    let small = SessionOpen {
        kernel: Some(Kernel::Python),
        limits: Limits {
            memory: Some(openshell_protocol::ByteSize::mib(128)),
            ..Limits::default()
        },
        ..SessionOpen::default()
    };
    let small = client
        .open_session(pool, "acme", &small)
        .await
        .expect("opens");
    run(&client, &small, &python("keep", "y = 1")).await;
    let bomb = run(&client, &small, &python("bomb", "big = bytearray(1 << 30)")).await;
    assert_ne!(bomb.status, Verdict::Completed, "{bomb:?}");
    assert!(bomb.kernel_restarted, "{bomb:?}");
    let fresh = run(&client, &small, &python("fresh", "print('y' in globals())")).await;
    assert_eq!(fresh.stdout.to_text_lossy(), "False\n", "{fresh:?}");
    client.close_session(&small).await.expect("closes");

    // A Node kernel: globals persist between node cells.
    let node = SessionOpen {
        kernel: Some(Kernel::Node),
        ..SessionOpen::default()
    };
    let node = client
        .open_session(pool, "acme", &node)
        .await
        .expect("opens");
    let mut set = ExecRequest::code("js-set", "node", "var x = 41; let y = 1;");
    set.limits.timeout = Some(DurationMs::secs(20));
    let set = run(&client, &node, &set).await;
    assert_eq!(set.exit_code, Some(0), "{set:?}");
    let mut get = ExecRequest::code("js-get", "node", "console.log(x + y)");
    get.limits.timeout = Some(DurationMs::secs(20));
    let get = run(&client, &node, &get).await;
    assert_eq!(get.stdout.to_text_lossy(), "42\n", "{get:?}");
    client.close_session(&node).await.expect("closes");

    // The command line: open, two calls sharing a variable, close.
    let url = nats.url();
    let envs = [("NATS_URL", url.as_str()), ("OPENSHELL_TENANT", "acme")];
    let opened = OPENSHELL
        .cli(
            [
                "session", "open", "--pool", pool, "--kernel", "python", "--idle", "1m",
            ],
            &envs,
        )
        .await;
    assert!(opened.status.success(), "{opened:?}");
    let handle = String::from_utf8_lossy(&opened.stdout).trim().to_string();
    let set = OPENSHELL
        .cli(
            [
                "exec",
                "--session",
                &handle,
                "--lang",
                "python",
                "-c",
                "x = 41",
            ],
            &envs,
        )
        .await;
    assert!(set.status.success(), "{set:?}");
    let get = OPENSHELL
        .cli(
            [
                "exec",
                "--session",
                &handle,
                "--lang",
                "python",
                "-c",
                "print(x + 1)",
            ],
            &envs,
        )
        .await;
    assert_eq!(String::from_utf8_lossy(&get.stdout), "42\n", "{get:?}");
    let closed = OPENSHELL.cli(["session", "close", &handle], &envs).await;
    assert!(closed.status.success(), "{closed:?}");
    let after = OPENSHELL
        .cli(
            [
                "exec",
                "--session",
                &handle,
                "--lang",
                "python",
                "-c",
                "print(x)",
            ],
            &envs,
        )
        .await;
    assert!(!after.status.success(), "{after:?}");

    // A container that dies under the session: the next job gets sandbox_lost, the session
    // ends (reason lost, owner told), and the call after finds nothing.
    let doomed = client
        .open_session(pool, "acme", &SessionOpen::default())
        .await
        .expect("opens");
    let doomed_workdir = workdir_of(&client, &doomed).await;
    let mut ended = client
        .nats()
        .subscribe(client.subjects().session_ended("acme", &doomed.session))
        .await
        .expect("subscribes");
    backend.kill_sandbox(&doomed, &doomed_workdir);
    let lost = run(&client, &doomed, &python("doomed", "print(1)")).await;
    assert_eq!(
        lost.error.as_ref().map(|error| error.kind),
        Some(ErrorKind::SandboxLost),
        "{lost:?}"
    );
    let told = tokio::time::timeout(
        Duration::from_secs(10),
        futures::StreamExt::next(&mut ended),
    )
    .await
    .expect("the owner is told")
    .expect("a message");
    let closed: SessionClosed = serde_json::from_slice(&told.payload).expect("a SessionClosed");
    assert_eq!(closed.reason, CloseReason::Lost);
    let after = run(&client, &doomed, &python("after-lost", "print(1)")).await;
    assert_eq!(
        after.error.as_ref().map(|error| error.kind),
        Some(ErrorKind::NotFound)
    );
    backend.assert_gone(&doomed, &doomed_workdir).await;

    // Shutdown closes what is open and tells its owner.
    let open = client
        .open_session(pool, "acme", &SessionOpen::default())
        .await
        .expect("opens");
    let open_workdir = workdir_of(&client, &open).await;
    let mut ended = client
        .nats()
        .subscribe(client.subjects().session_ended("acme", &open.session))
        .await
        .expect("subscribes");
    client.nats().flush().await.expect("flushes");
    worker.terminate().await;
    let told = tokio::time::timeout(
        Duration::from_secs(10),
        futures::StreamExt::next(&mut ended),
    )
    .await
    .expect("the owner is told")
    .expect("a message");
    let closed: SessionClosed = serde_json::from_slice(&told.payload).expect("a SessionClosed");
    assert_eq!(closed.reason, CloseReason::Shutdown);
    backend.assert_gone(&open, &open_workdir).await;
}

pub trait WorkerToken {
    fn worker_id_token(&self) -> String;
}

impl WorkerToken for SessionOpened {
    /// The worker's token, as the session's subject spells it.
    fn worker_id_token(&self) -> String {
        self.subject
            .split('.')
            .nth(3)
            .unwrap_or_default()
            .to_string()
    }
}
