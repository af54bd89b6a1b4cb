use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;

use nix::fcntl::OFlag;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::pipe2;

use super::*;

/// Runs `script` with `sh -c` in `dir` (stdin closed, stdout and stderr captured together)
/// under `rlimits`; its exit status and output.
fn sh(
    script: &str,
    dir: &str,
    rlimits: Vec<RawRlimit>,
) -> Result<(WaitStatus, String), LaunchError> {
    let (stdin_read, stdin_write) = pipe2(OFlag::O_CLOEXEC).unwrap();
    let (out_read, out_write) = pipe2(OFlag::O_CLOEXEC).unwrap();
    let err_write = out_write.try_clone().unwrap();
    drop(stdin_write);
    let plan = Plan::new(
        vec![c"/bin/sh".to_owned()],
        vec![
            c"sh".to_owned(),
            c"-c".to_owned(),
            CString::new(script).unwrap(),
        ],
        vec![c"PATH=/usr/bin:/bin".to_owned(), c"MARK=set".to_owned()],
        CString::new(dir).unwrap(),
        [
            stdin_read.as_raw_fd(),
            out_write.as_raw_fd(),
            err_write.as_raw_fd(),
        ],
        None,
        rlimits,
    );
    let launched = launch(&plan);
    drop((stdin_read, out_write, err_write));
    let (pid, _pidfd) = launched?;
    let mut output = String::new();
    fs::File::from(out_read)
        .read_to_string(&mut output)
        .unwrap();
    Ok((waitpid(pid, None).unwrap(), output))
}

#[test]
fn the_child_gets_its_own_session_env_dir_and_clean_signals() {
    let script = "echo \"$MARK $(pwd)\"; \
                  [ \"$(cut -d' ' -f6 /proc/$$/stat)\" = \"$$\" ] && echo leader; \
                  grep -E '^(SigBlk|SigIgn|NoNewPrivs)' /proc/self/status; exit 7";
    let (status, output) = sh(script, "/tmp", Vec::new()).unwrap();
    assert!(matches!(status, WaitStatus::Exited(_, 7)), "{status:?}");
    assert!(output.starts_with("set /tmp\n"), "{output}");
    // The shell of `sh -c` is the session leader: its sid (field 6) is its pid.
    assert!(
        output.contains("leader\n"),
        "not in a session of its own: {output}"
    );
    assert!(output.contains("SigBlk:\t0000000000000000"), "{output}");
    assert!(output.contains("SigIgn:\t0000000000000000"), "{output}");
    assert!(output.contains("NoNewPrivs:\t1"), "{output}");
}

#[test]
fn rlimits_are_in_force_at_exec() {
    let rlimits = vec![RawRlimit {
        resource: libc::RLIMIT_NOFILE as c_int,
        limit: libc::rlimit64 {
            rlim_cur: 17,
            rlim_max: 17,
        },
    }];
    let (status, output) = sh("ulimit -n", "/", rlimits).unwrap();
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    assert_eq!(output, "17\n");
}

#[test]
fn failures_name_their_stage() {
    let missing_dir = sh("true", "/nonexistent-openshell-dir", Vec::new()).unwrap_err();
    assert_eq!(
        (missing_dir.stage, missing_dir.errno),
        (Stage::Chdir, Errno::ENOENT)
    );
    let too_high = vec![RawRlimit {
        resource: libc::RLIMIT_NOFILE as c_int,
        limit: libc::rlimit64 {
            rlim_cur: libc::RLIM64_INFINITY,
            rlim_max: libc::RLIM64_INFINITY,
        },
    }];
    let rlimit = sh("true", "/", too_high).unwrap_err();
    assert_eq!((rlimit.stage, rlimit.errno), (Stage::Rlimit, Errno::EPERM));
    assert_eq!(
        rlimit.to_string(),
        "setrlimit failed: Operation not permitted"
    );
}

#[test]
fn exec_tries_every_candidate_like_execvp() {
    let (_read, write) = pipe2(OFlag::O_CLOEXEC).unwrap();
    let fd = write.as_raw_fd();
    let plan = |candidates: Vec<CString>| {
        Plan::new(
            candidates,
            vec![c"true".to_owned()],
            Vec::new(),
            c"/".to_owned(),
            [fd, fd, fd],
            None,
            Vec::new(),
        )
    };
    let found = plan(vec![
        c"/nonexistent-openshell/true".to_owned(),
        c"/etc/passwd/true".to_owned(),
        c"/bin/true".to_owned(),
    ]);
    let (pid, _pidfd) = launch(&found).unwrap();
    assert!(matches!(waitpid(pid, None), Ok(WaitStatus::Exited(_, 0))));
    let missing = launch(&plan(vec![c"/nonexistent-openshell/true".to_owned()])).unwrap_err();
    assert_eq!((missing.stage, missing.errno), (Stage::Exec, Errno::ENOENT));
    let not_executable = launch(&plan(vec![
        c"/nonexistent-openshell/true".to_owned(),
        c"/etc/passwd".to_owned(),
    ]))
    .unwrap_err();
    assert_eq!(
        (
            not_executable.stage,
            not_executable.errno,
            not_executable.index
        ),
        (Stage::Exec, Errno::EACCES, 1)
    );
}
