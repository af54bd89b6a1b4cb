//! Cases for well-behaved jobs: languages, exit codes, stdin, environment, files, reports.

use std::collections::BTreeMap;

use crate::{Backend, Ending, Job, JobControl, JobFile, OutputSink, Stream, Written};
use openshell_protocol::{ByteSize, DurationMs, ErrorKind, LimitName, Limits, Payload};
use tokio_util::sync::CancellationToken;

use super::{argv_job, assert_exited, code_job, run};

async fn hello(backend: &dyn Backend, language: &str, code: &str) {
    let run = run(backend, code_job(language, code, &[])).await;
    assert_exited(&run, 0);
    assert_eq!(run.stdout(), format!("hello from {language}\n"));
    assert_eq!(run.stderr(), "");
    assert!(!run.output.truncated());
}

/// Python prints hello.
pub async fn hello_python(backend: &dyn Backend) {
    hello(backend, "python", "print('hello from python')").await;
}

/// Node prints hello.
pub async fn hello_node(backend: &dyn Backend) {
    hello(backend, "node", "console.log('hello from node')").await;
}

/// Bash prints hello.
pub async fn hello_bash(backend: &dyn Backend) {
    // `bash` comes from BASH_VERSION, so sh standing in for bash would print "hello from".
    hello(backend, "bash", "echo \"hello from ${BASH_VERSION:+bash}\"").await;
}

/// sh prints hello.
pub async fn hello_sh(backend: &dyn Backend) {
    hello(backend, "sh", "echo hello from sh").await;
}

/// Exit codes come back as they were.
pub async fn exit_codes(backend: &dyn Backend) {
    for code in [0, 3, 255] {
        let run = run(backend, code_job("sh", &format!("exit {code}"), &[])).await;
        assert_exited(&run, code);
    }
}

/// A program killed by a signal is reported by the signal's Linux number and no exit code:
/// SIGKILL is 9 on every backend, and signals sshd cannot name (SIGXCPU) keep their number.
pub async fn killed_by_a_signal(backend: &dyn Backend) {
    for (name, number) in [("KILL", 9), ("XCPU", 24), ("TERM", 15)] {
        let run = run(backend, code_job("sh", &format!("kill -{name} $$"), &[])).await;
        assert_eq!(run.execution.ending, Ending::Exited, "SIG{name}: {run:?}");
        assert_eq!(
            (run.execution.exit_code, run.execution.signal),
            (None, Some(number)),
            "SIG{name}: {run:?}"
        );
    }
}

/// Files that cannot all be written (a request file under the language's code file, which
/// the decoder cannot know of) are refused as `invalid_request` on every backend, by the
/// protocol's one rule, before anything runs.
pub async fn conflicting_files_are_invalid(backend: &dyn Backend) {
    let mut job = code_job("python", "print('ran')", &[]);
    let code_file = job.files[0].path.clone();
    job.files.push(JobFile {
        path: format!("{code_file}/data.txt")
            .parse()
            .expect("a relative path"),
        content: b"x".to_vec(),
        mode: 0o644,
    });
    let control = JobControl {
        cancel: CancellationToken::new(),
        output: OutputSink::new(1 << 20),
    };
    let outcome = backend.execute(job, control.clone()).await;
    let error = outcome.expect_err("conflicting files ran");
    assert_eq!(error.kind, ErrorKind::InvalidRequest, "{error}");
    assert!(error.to_string().contains("to be a directory"), "{error}");
    assert!(control.output.snapshot().stdout.is_empty());
}

/// Stdin reaches the program byte for byte, even when it is bigger than a pipe buffer and the
/// program writes while it reads.
pub async fn stdin_binary_echo(backend: &dyn Backend) {
    let input: Vec<u8> = (0..=255u8).cycle().take(200 * 1024).collect();
    let job = Job {
        stdin: Payload(input.clone()),
        ..argv_job(&["cat"])
    };
    let run = run(backend, job).await;
    assert_exited(&run, 0);
    assert!(
        run.output.stdout == input,
        "stdout differs from stdin ({} bytes)",
        run.output.stdout.len()
    );
}

/// Empty stdin is closed: a reader sees end of file at once.
pub async fn stdin_empty_is_closed(backend: &dyn Backend) {
    let run = run(
        backend,
        code_job(
            "python",
            "import sys\nprint(len(sys.stdin.buffer.read()))",
            &[],
        ),
    )
    .await;
    assert_exited(&run, 0);
    assert_eq!(run.stdout(), "0\n");
}

/// A program that never reads a large stdin still finishes.
pub async fn stdin_unread_does_not_block(backend: &dyn Backend) {
    let job = Job {
        stdin: Payload(vec![b'x'; 1024 * 1024]),
        ..code_job("sh", "echo done", &[])
    };
    let run = run(backend, job).await;
    assert_exited(&run, 0);
    assert_eq!(run.stdout(), "done\n");
}

/// The job's variables are visible; none of the worker's own leak in.
pub async fn env_visible_worker_env_hidden(backend: &dyn Backend) {
    let job = Job {
        env: BTreeMap::from([(
            "OPENSHELL_CONFORMANCE".to_string(),
            "visible value".to_string(),
        )]),
        ..code_job(
            "python",
            "import json, os\nprint(json.dumps(dict(os.environ)))",
            &[],
        )
    };
    let run = run(backend, job).await;
    assert_exited(&run, 0);
    let env: BTreeMap<String, String> =
        serde_json::from_str(&run.stdout()).expect("the job printed its env as JSON");
    assert_eq!(
        env.get("OPENSHELL_CONFORMANCE").map(String::as_str),
        Some("visible value")
    );
    assert!(env.contains_key("PATH"), "no PATH in {env:?}");
    // Variables a sandbox legitimately sets itself, possibly to the same value as here.
    const OWN: [&str; 12] = [
        "PATH", "HOME", "LANG", "TMPDIR", "PWD", "OLDPWD", "SHLVL", "_", "TERM", "HOSTNAME",
        "USER", "LC_ALL",
    ];
    let leaked: Vec<_> = std::env::vars()
        .filter(|(key, value)| !OWN.contains(&key.as_str()) && env.get(key) == Some(value))
        .map(|(key, _)| key)
        .collect();
    assert!(
        leaked.is_empty(),
        "the worker's environment leaked into the job: {leaked:?}"
    );
}

/// Files land at nested paths with binary content, and an executable script runs.
pub async fn files_nested_binary_and_executable(backend: &dyn Backend) {
    let blob: Vec<u8> = (0..=255u8).rev().collect();
    let job = Job {
        files: vec![
            JobFile {
                path: "data/nested/deep/blob.bin"
                    .parse()
                    .expect("a relative path"),
                content: blob.clone(),
                mode: 0o644,
            },
            JobFile {
                path: "bin/show.sh".parse().expect("a relative path"),
                content: b"#!/bin/sh\ncat data/nested/deep/blob.bin\n".to_vec(),
                mode: 0o755,
            },
        ],
        ..argv_job(&["./bin/show.sh"])
    };
    let run = run(backend, job).await;
    assert_exited(&run, 0);
    assert_eq!(run.output.stdout, blob);
}

/// A program that does not exist exits 127, as in a shell.
pub async fn missing_program_exits_127(backend: &dyn Backend) {
    let run = run(backend, argv_job(&["openshell-no-such-program-7f3a"])).await;
    assert_exited(&run, 127);
    assert!(!run.output.stderr.is_empty(), "no message on stderr");
}

/// Every limit set appears in the report; `run` checks each against the capabilities.
pub async fn enforcement_report_lists_every_limit(backend: &dyn Backend) {
    let limits = Limits {
        timeout: Some(DurationMs::secs(10)),
        cpu_time: Some(DurationMs::secs(5)),
        memory: Some(ByteSize::mib(512)),
        cpus: Some(0.5),
        processes: Some(256),
        open_files: Some(256),
        output: Some(ByteSize::mib(1)),
        disk: Some(ByteSize::mib(16)),
    };
    let job = Job {
        limits,
        ..code_job("sh", "echo ok", &[])
    };
    let run = run(backend, job).await;
    assert_exited(&run, 0);
    assert_eq!(run.stdout(), "ok\n");
    let reported: Vec<_> = run.execution.enforcement.keys().copied().collect();
    assert_eq!(reported, LimitName::ALL.to_vec());
    // A job without limits gets an empty report.
    let bare = Job {
        limits: Limits::default(),
        ..code_job("sh", "true", &[])
    };
    assert!(
        super::run(backend, bare)
            .await
            .execution
            .enforcement
            .is_empty()
    );
}

/// What a backend writes to a tapped sink (live output) is the output, in the order written:
/// each stream's taps concatenate to exactly what the result keeps, and writes separated by a
/// pause arrive in that order across streams.
pub async fn live_output_is_the_output_in_order(backend: &dyn Backend) {
    let job = code_job(
        "bash",
        "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three; sleep 0.3; printf four >&2",
        &[],
    );
    let (tap, mut written) = tokio::sync::mpsc::unbounded_channel();
    let control = JobControl {
        cancel: CancellationToken::new(),
        output: OutputSink::tapped(1 << 20, tap),
    };
    let execution = backend
        .execute(job, control.clone())
        .await
        .expect("the job runs");
    control.output.close_tap();
    assert_eq!(execution.exit_code, Some(0), "{execution:?}");
    let (mut stdout, mut stderr, mut order) = (Vec::new(), Vec::new(), Vec::<Stream>::new());
    while let Ok(Written { stream, bytes }) = written.try_recv() {
        if order.last() != Some(&stream) {
            order.push(stream);
        }
        match stream {
            Stream::Stdout => stdout.extend(bytes),
            Stream::Stderr => stderr.extend(bytes),
        }
    }
    let kept = control.output.snapshot();
    assert_eq!(stdout, kept.stdout, "stdout taps are the output");
    assert_eq!(stderr, kept.stderr, "stderr taps are the output");
    assert_eq!(
        (stdout.as_slice(), stderr.as_slice()),
        (b"one\nthree\n".as_slice(), b"two\nfour".as_slice())
    );
    assert_eq!(
        order,
        [
            Stream::Stdout,
            Stream::Stderr,
            Stream::Stdout,
            Stream::Stderr
        ],
        "writes arrived out of order"
    );
}
