//! A held local sandbox, without the worker: state and files persist across jobs, a stopped
//! job leaves nothing running but the sandbox, and closing leaves no process or directory.

use std::collections::BTreeMap;

use openshell_protocol::{ByteSize, DurationMs, LimitName, Limits, Payload};
use tokio_util::sync::CancellationToken;

use super::super::{LocalBackend, LocalSettings};
use super::Pid;
use super::procs::{kill_round, namespace_of};
use openshell_backend::session::kernel;
use openshell_backend::{Backend, Ending, Execution, Job, JobControl, JobFile, OutputSink};
use openshell_backend::{SandboxSession, SessionBackend, SessionSpec};
use openshell_protocol::session::Kernel;

fn job(argv: &[&str], files: &[(&str, &str)], timeout: u64) -> Job {
    Job {
        id: "session-test".to_string(),
        tenant: "test".to_string(),
        language: None,
        argv: argv.iter().map(|arg| (*arg).to_string()).collect(),
        stdin: Payload::default(),
        env: BTreeMap::new(),
        files: files
            .iter()
            .map(|(path, content)| JobFile {
                path: path.parse().expect("a relative path"),
                content: content.as_bytes().to_vec(),
                mode: 0o644,
            })
            .collect(),
        limits: Limits {
            timeout: Some(DurationMs::secs(timeout)),
            output: Some(ByteSize::mib(1)),
            ..Limits::default()
        },
        network: false,
        outputs: None,
        egress: None,
    }
}

fn cell(code: &str, timeout: u64) -> Job {
    kernel::cell(
        job(&["python3", "main.py"], &[("main.py", code)], timeout),
        Kernel::Python,
        "main.py",
    )
}

async fn run(session: &dyn SandboxSession, job: Job) -> (Execution, String, String) {
    let control = JobControl {
        cancel: CancellationToken::new(),
        output: OutputSink::new(1 << 20),
    };
    let execution = session
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

#[tokio::test(flavor = "multi_thread")]
async fn a_held_sandbox_keeps_state_and_ends_without_a_trace() {
    let backend = LocalBackend::new(LocalSettings::default()).expect("local backend");
    let Some(sessions) = sessions_here(&backend) else {
        return;
    };
    let spec = SessionSpec {
        id: "s-test".to_string(),
        tenant: "test".to_string(),
        limits: Limits {
            memory: Some(ByteSize::mib(512)),
            processes: Some(128),
            ..Limits::default()
        },
    };
    let session = sessions.open(spec).await.expect("the session opens");
    let (first, _, err) = run(&*session, cell("x = 41\nimport math", 20)).await;
    assert_eq!(first.exit_code, Some(0), "{err}");
    let (second, out, err) = run(&*session, cell("print(x + 1)\nmath.sqrt(16)", 20)).await;
    assert_eq!(
        (second.exit_code, out.as_str()),
        (Some(0), "42\n4.0\n"),
        "{err}"
    );
    let (_, out, err) = run(
        &*session,
        job(
            &["sh", "-c", "echo kept > data.txt; cat note.txt; id -un"],
            &[("note.txt", "hi\n")],
            20,
        ),
    )
    .await;
    assert_eq!(out, "hi\nopenshell-job\n", "{err}");
    // Entered jobs are as confined as the sandbox's: its seccomp filter, its pid namespace.
    let (_, out, err) = run(
        &*session,
        job(
            &[
                "sh",
                "-c",
                "grep ^Seccomp: /proc/self/status; unshare -U true || echo refused",
            ],
            &[],
            20,
        ),
    )
    .await;
    assert_eq!(out, "Seccomp:\t2\nrefused\n", "{err}");
    let (spun, _, _) = run(&*session, cell("while True: pass", 1)).await;
    assert_eq!(spun.ending, Ending::Timeout);
    // The session's cgroup counts every job's CPU: a job's own is per process, and says so.
    let mut limited = job(&["true"], &[], 20);
    limited.limits.cpu_time = Some(DurationMs::secs(5));
    let (limited, _, _) = run(&*session, limited).await;
    let cpu = &limited.enforcement[&LimitName::CpuTime];
    assert!(
        cpu.mechanism.starts_with("setrlimit(RLIMIT_CPU)"),
        "{cpu:?}"
    );
    let (after, out, err) = run(
        &*session,
        cell(
            "print('x' in globals(), open('data.txt').read().strip())",
            20,
        ),
    )
    .await;
    assert_eq!(
        (after.exit_code, out.as_str()),
        (Some(0), "False kept\n"),
        "{err}"
    );
    let local = session.describe();
    let init: i32 = local.rsplit(' ').next().unwrap().parse().unwrap();
    let namespace = namespace_of(Pid::from_raw(init)).expect("the sandbox runs");
    session.close().await.expect("the session closes");
    assert_eq!(
        kill_round(&namespace, &[]),
        0,
        "no process of the sandbox is left"
    );
}

/// The backend's sessions; `None` without bubblewrap (not root), which fails in CI.
fn sessions_here(backend: &LocalBackend) -> Option<&dyn SessionBackend> {
    let sessions = backend.sessions();
    assert!(
        sessions.is_some() || std::env::var_os("CI").is_none_or(|value| value != "true"),
        "sessions need bubblewrap in CI"
    );
    sessions
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sessions_of_one_user_cannot_see_each_other() {
    let backend = LocalBackend::new(LocalSettings::default()).expect("local backend");
    let Some(sessions) = sessions_here(&backend) else {
        return;
    };
    let spec = |id: &str| SessionSpec {
        id: id.to_string(),
        tenant: id.to_string(),
        limits: Limits::default(),
    };
    let first = sessions.open(spec("s-first")).await.expect("opens");
    let second = sessions.open(spec("s-second")).await.expect("opens");
    let (_, workdir, _) = run(
        &*first,
        job(
            &["sh", "-c", "pwd; (sleep 300 &) ; echo secret > kept.txt"],
            &[],
            20,
        ),
    )
    .await;
    let workdir = workdir.trim();
    // The second sees neither the first's directory nor its processes (its own pid 1, its
    // keep-alive, and itself are all there is).
    let (_, out, _) = run(
        &*second,
        job(
            &[
                "sh",
                "-c",
                &format!("cat {workdir}/kept.txt 2>&1 | head -c 0; test -e {workdir} && echo visible; ls /proc | grep -c '^[0-9]'"),
            ],
            &[],
            20,
        ),
    )
    .await;
    let processes: u32 = out.trim().parse().unwrap_or_else(|_| panic!("{out}"));
    assert!(
        processes <= 5,
        "the second session sees {processes} processes"
    );
    first.close().await.expect("closes");
    second.close().await.expect("closes");
    assert!(
        !std::path::Path::new(workdir).exists(),
        "{workdir} was removed"
    );
}
