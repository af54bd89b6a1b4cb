//! The wrapper run by this machine's own `sh`, as sshd would run it.

use std::io::Write;
use std::process::{Command, Stdio};

use super::*;
use crate::backend::ssh::upload;

fn plan(argv: &[&str], files: Vec<FileEntry>) -> Plan {
    Plan {
        work_root: std::env::temp_dir().display().to_string(),
        path: "/usr/bin:/bin".into(),
        env: vec![("GREETING".into(), "it's \"quoted\" $HOME".into())],
        argv: argv.iter().map(|arg| arg.to_string()).collect(),
        files,
        rlimits: Rlimits {
            open_files: Some(64),
            ..Rlimits::default()
        },
        cgroup: None,
        backstop_secs: 30,
    }
}

/// Runs the upload through `sh -c <bootstrap>` with `stdin` after it.
fn run(plan: &Plan, contents: &[&[u8]], stdin: &[u8]) -> (String, String, Option<i32>) {
    let upload = upload::build(plan, contents);
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&upload.command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(&upload.prefix).expect("upload");
    input.write_all(stdin).expect("stdin");
    drop(input);
    let output = child.wait_with_output().expect("wait");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.code(),
    )
}

#[test]
#[expect(
    clippy::disallowed_methods,
    reason = "a synchronous test waiting for the keeper"
)]
fn files_env_and_stdin_arrive_exactly_and_the_directory_goes() {
    let blob: Vec<u8> = (0..=255u8).collect();
    let files = vec![
        FileEntry {
            path: "a/b/blob.bin".into(),
            len: blob.len(),
            mode: 0o644,
        },
        FileEntry {
            path: "run.sh".into(),
            len: 0,
            mode: 0o755,
        },
    ];
    let code = "cmp a/b/blob.bin /dev/stdin && echo same; echo \"$GREETING\"; ulimit -n; pwd; test -x run.sh && echo exec; env | sort | cut -d= -f1 | tr '\\n' ' '";
    let plan = plan(&["sh", "-c", code], files);
    let (stdout, stderr, status) = run(&plan, &[&blob, b""], &blob);
    assert_eq!(status, Some(0), "{stderr}");
    let mut lines = stdout.lines();
    assert!(lines.next().unwrap().starts_with(HEADER));
    assert_eq!(lines.next(), Some(RUN));
    assert_eq!(lines.next(), Some("same"));
    assert_eq!(lines.next(), Some("it's \"quoted\" $HOME"));
    assert_eq!(lines.next(), Some("64"));
    let dir = lines.next().unwrap().to_string();
    assert_eq!(lines.next(), Some("exec"));
    assert_eq!(lines.next(), Some("GREETING HOME LANG PATH PWD TMPDIR "));
    // The keeper removes the directory once the job is gone.
    for _ in 0..50 {
        if !std::path::Path::new(&dir).exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{dir} was not removed");
}

#[test]
fn a_cut_upload_never_starts_the_program() {
    let plan = plan(
        &["sh", "-c", "echo ran"],
        vec![FileEntry {
            path: "f".into(),
            len: 10,
            mode: 0o600,
        }],
    );
    let upload = upload::build(&plan, &[b"0123456789"]);
    let cut = &upload.prefix[..upload.prefix.len() - 5];
    let mut child = Command::new("sh")
        .args(["-c", &upload.command])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(cut).unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("ran") && !stdout.contains(RUN), "{stdout}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("cut short"));
}

#[test]
fn a_missing_program_exits_127() {
    let (stdout, stderr, status) = run(&plan(&["openshell-no-such-program"], vec![]), &[], b"");
    assert_eq!(status, Some(127), "{stdout} {stderr}");
    assert!(stderr.contains("openshell-no-such-program"));
}

#[test]
fn kill_and_probe_commands_quote_their_paths() {
    assert_eq!(
        kill_command(42, None),
        "kill -s KILL -- -42 2>/dev/null; true"
    );
    assert!(kill_command(42, Some("/cg")).contains("'/cg/job-42/cgroup.kill'"));
    assert!(probe_command(Some("/cg")).contains("cgroup=$r"));
    assert_eq!(quote("it's"), "'it'\\''s'");
}

#[test]
fn rlimits_are_clamped_to_the_hosts_hard_limits() {
    use openshell_protocol::{ByteSize, DurationMs};
    let limits = Limits {
        memory: Some(ByteSize::mib(64)),
        cpu_time: Some(DurationMs(1500)),
        processes: Some(100),
        open_files: Some(100_000),
        ..Limits::default()
    };
    let hard = |resource: &str| (resource == "NOFILE").then_some(20_000);
    let plain = rlimits(&limits, false, hard);
    assert_eq!(plain.address_space, Some(64 << 20));
    assert_eq!(plain.cpu_seconds, Some(2));
    assert_eq!(plain.open_files, Some(20_000));
    let cgroup = rlimits(&limits, true, hard);
    assert_eq!((cgroup.address_space, cgroup.processes), (None, None));
}
