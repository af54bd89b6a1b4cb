//! The attacks of issue 12 against an SSH host prepared by deploy/ssh-host/prepare.sh: each
//! test runs a hostile job, checks that the attack reached nothing (on the host, from the
//! test's own view of it), that no process of the job survives, and that the next job, with
//! a secret in its environment, runs unharmed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use openshell_backend::{Backend, Ending, Execution, Job};
use openshell_protocol::{DurationMs, EnforcementStatus, LimitName};
use tokio_util::sync::CancellationToken;

use openshell_test_support::jobs::{bash_job, marker, run};
use openshell_test_support::process::processes_with;
use openshell_test_support::sshd::{SshdBackend, TEST_USER};

/// Where prepare.sh keeps the transport user's key.
const AUTHORIZED_KEYS: &str = "/etc/openshell/authorized_keys";

/// `script` under bash as `tenant`, with `env`.
fn job(tenant: &str, script: &str, env: &[(&str, &str)]) -> Job {
    let mut job = bash_job(script);
    job.tenant = tenant.to_string();
    job.env = env
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect::<BTreeMap<_, _>>();
    job
}

/// Runs `job` to its end; the backend must not fail.
async fn ran(ssh: &SshdBackend, job: Job) -> (Execution, String) {
    let (result, output) = run(&ssh.backend, job, CancellationToken::new()).await;
    let execution = result.unwrap_or_else(|error| {
        panic!("the backend failed: {error}\nsshd log:\n{}", ssh.sshd.log())
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("job stderr: {stderr}");
    (
        execution,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The next job of another tenant runs as if nothing had happened, and its secret stays its own.
async fn assert_next_job_unharmed(ssh: &SshdBackend) {
    let secret = marker("secret");
    let (execution, stdout) = ran(
        ssh,
        job(
            "next-tenant",
            "echo \"$SECRET\"; ls -A /tmp /var/tmp /dev/shm \"$HOME\" | grep -v -e '^main.sh$' -e ':$' -e '^$' || true",
            &[("SECRET", &secret)],
        ),
    )
    .await;
    assert_eq!(
        (execution.ending, execution.exit_code),
        (Ending::Exited, Some(0)),
        "{execution:?}"
    );
    assert_eq!(stdout, format!("{secret}\n"), "the next job saw leftovers");
}

/// No process whose command line holds `marker` is left anywhere on the host.
async fn assert_gone(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "survived the job: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a process with `marker` runs on the host, and returns its pids.
async fn running(marker: &str) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = processes_with(marker);
        if !found.is_empty() {
            return found;
        }
        assert!(Instant::now() < deadline, "{marker} never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every file below `paths` with its bytes, to compare before and after an attack.
fn snapshot(paths: &[PathBuf]) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            let entries = std::fs::read_dir(&path).expect("read_dir");
            pending.extend(entries.flatten().map(|entry| entry.path()));
        } else {
            files.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
        }
    }
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn writing_ssh_keys_and_shell_profiles_reaches_nothing_sshd_reads() {
    let Some(mut ssh) = SshdBackend::start().await else {
        return;
    };
    let home = nix::unistd::User::from_name(TEST_USER)
        .expect("getpwnam")
        .expect("the transport user exists")
        .dir;
    let keys = Path::new(AUTHORIZED_KEYS).join(TEST_USER);
    let watched = [keys.clone(), home.clone()];
    let before = snapshot(&watched);
    let targets = [
        home.join(".ssh/authorized_keys"),
        keys.clone(),
        home.join(".profile"),
        home.join(".ssh/rc"),
        PathBuf::from("/etc/profile"),
        PathBuf::from("/etc/ssh/sshd_config"),
    ];
    let list: Vec<String> = targets.iter().map(|t| t.display().to_string()).collect();
    let script = format!(
        r#"forced='command="tee -a /tmp/captured" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAttacker'
for target in "$HOME/.ssh/authorized_keys" {}; do
  mkdir -p "$(dirname "$target")" 2>/dev/null
  if echo "$forced" >> "$target" 2>/dev/null; then echo "wrote $target"; else echo "refused $target"; fi
done
"#,
        list.join(" ")
    );
    let (execution, stdout) = ran(&ssh, job("attacker", &script, &[])).await;
    assert_eq!(execution.exit_code, Some(0), "{execution:?}");
    // Its own home is a tmpfs of its own: writable, and gone with it.
    assert!(
        stdout.contains("wrote /workspace/.ssh/authorized_keys"),
        "{stdout}"
    );
    for target in &list {
        assert!(stdout.contains(&format!("refused {target}")), "{stdout}");
    }
    assert_eq!(snapshot(&watched), before, "files sshd reads changed");
    // The worker reconnects, as it did when the attack captured the next tenant's job.
    ssh.sshd.restart().await;
    assert_next_job_unharmed(&ssh).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_cannot_kill_the_transport_its_keeper_or_a_neighbour() {
    let Some(ssh) = SshdBackend::start().await else {
        return;
    };
    let neighbour_marker = marker("neighbour");
    let neighbour = job(
        "neighbour",
        &format!("(exec -a {neighbour_marker} sleep 5)\necho neighbour done\n"),
        &[],
    );
    let attack = async {
        let neighbour_pids = running(&neighbour_marker).await;
        let transport = ssh.sshd.serving(&format!("sshd: {TEST_USER}"));
        // The job's keeper: its resident runner (`sandbox serve`), or `sandbox run`.
        let mut keepers = ssh.sshd.serving("openshell/sandbox serve");
        keepers.extend(ssh.sshd.serving("openshell/sandbox run"));
        let inits = ssh.sshd.serving("openshell/sandbox-init");
        assert!(!transport.is_empty() && !keepers.is_empty() && !inits.is_empty());
        let targets: Vec<String> = [&neighbour_pids, &transport, &keepers, &inits]
            .into_iter()
            .flatten()
            .map(i32::to_string)
            .collect();
        let script = r#"for p in $TARGETS; do kill -9 "$p" 2>/dev/null && echo "killed $p"; done
pkill -9 sshd; pkill -9 -f sandbox; pkill -9 sudo
kill -9 -1
echo still here
"#;
        let (execution, stdout) = ran(
            &ssh,
            job("attacker", script, &[("TARGETS", &targets.join(" "))]),
        )
        .await;
        (execution, stdout, transport)
    };
    let ((neighbour, neighbour_out), (execution, stdout, transport)) =
        tokio::join!(ran(&ssh, neighbour), attack);
    assert_eq!(stdout, "still here\n", "{execution:?}");
    assert_eq!(
        (
            neighbour.ending,
            neighbour.exit_code,
            neighbour_out.as_str()
        ),
        (Ending::Exited, Some(0), "neighbour done\n"),
        "the neighbour was harmed"
    );
    for pid in transport {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "the transport's sshd {pid} died"
        );
    }
    assert_gone(&neighbour_marker).await;
    assert_next_job_unharmed(&ssh).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_concurrent_job_of_another_tenant_is_invisible_and_untouchable() {
    let Some(ssh) = SshdBackend::start().await else {
        return;
    };
    let secret = marker("victim-secret");
    let victim_marker = marker("victim");
    let victim = job(
        "victim",
        &format!("(exec -a {victim_marker} sleep 5)\nid -u\n"),
        &[("VICTIM_SECRET", &secret)],
    );
    let attack = async {
        let pids: Vec<String> = running(&victim_marker)
            .await
            .iter()
            .map(i32::to_string)
            .collect();
        let script = r#"grep -a -h -o 'VICTIM_SECRET=[^[:cntrl:]]*' /proc/[0-9]*/environ 2>/dev/null
for p in $PIDS; do
  cat "/proc/$p/environ" 2>/dev/null && echo "read $p"
  kill -9 "$p" 2>/dev/null && echo "killed $p"
  cat "/proc/$p/mem" >/dev/null 2>&1 && echo "opened mem of $p"
done
echo "sees $(ls -d /proc/[0-9]* | wc -l) processes"
id -u
"#;
        ran(&ssh, job("attacker", script, &[("PIDS", &pids.join(" "))])).await
    };
    let ((victim, victim_out), (execution, stdout)) = tokio::join!(ran(&ssh, victim), attack);
    assert_eq!(execution.exit_code, Some(0), "{execution:?}");
    assert!(!stdout.contains(&secret), "the secret leaked: {stdout}");
    assert!(
        !stdout.contains("read ") && !stdout.contains("killed ") && !stdout.contains("opened "),
        "{stdout}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    // Itself, its `ls`, `wc`, the command substitution's shell, and pid 1.
    assert!(
        lines.iter().any(|line| line.starts_with("sees ")),
        "{stdout}"
    );
    assert_eq!((victim.ending, victim.exit_code), (Ending::Exited, Some(0)));
    let (victim_uid, attacker_uid) = (victim_out.trim(), lines.last().copied().unwrap_or(""));
    assert_ne!(victim_uid, attacker_uid, "two running jobs shared a uid");
    assert_gone(&victim_marker).await;
    assert_next_job_unharmed(&ssh).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn network_reaches_nothing_not_even_a_loopback_port_of_the_host() {
    let Some(ssh) = SshdBackend::start().await else {
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let script = format!(
        r#"python3 - <<'EOF'
import errno, socket
for host in ("127.0.0.1", "192.0.2.1"):
    try:
        socket.create_connection((host, {port}), timeout=3).close()
        print(host, "connected")
    except OSError as error:
        print(host, errno.errorcode.get(error.errno, error))
EOF
grep -c : /proc/net/dev
"#
    );
    let (execution, stdout) = ran(&ssh, job("attacker", &script, &[])).await;
    assert_eq!(execution.exit_code, Some(0), "{execution:?}");
    // Its own loopback has nothing listening; no route leads anywhere else; `lo` is its only
    // interface.
    assert_eq!(stdout, "127.0.0.1 ECONNREFUSED\n192.0.2.1 ENETUNREACH\n1\n");
    listener.set_nonblocking(true).expect("nonblocking");
    assert!(listener.accept().is_err(), "a connection reached the host");
    let network = &ssh.backend.capabilities()[&LimitName::Network];
    assert_eq!(network.status, EnforcementStatus::Enforced, "{network:?}");
    assert_next_job_unharmed(&ssh).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn setsid_survivors_die_with_the_job_whether_or_not_they_hold_stdout() {
    let Some(ssh) = SshdBackend::start().await else {
        return;
    };
    for redirect in ["</dev/null >/dev/null 2>&1", ""] {
        let marker = marker("survivor");
        // Double fork: the survivor's parent exits, so it belongs to nobody but pid 1.
        let script =
            format!("(setsid bash -c 'exec -a {marker} sleep 60' {redirect} &)\necho started\n");
        let (execution, stdout) = ran(&ssh, job("attacker", &script, &[])).await;
        // Not `timeout`: the verdict is the job's own process, whatever holds stdout open.
        assert_eq!(
            (execution.ending, execution.exit_code, stdout.as_str()),
            (Ending::Exited, Some(0), "started\n"),
            "with `{redirect}`: {execution:?}"
        );
        assert_gone(&marker).await;
    }
    assert_next_job_unharmed(&ssh).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_a_job_writes_is_left_for_the_next_one() {
    let Some(ssh) = SshdBackend::start().await else {
        return;
    };
    let secret = marker("leftover");
    let places = "/tmp /var/tmp /dev/shm \"$HOME\" /etc /usr/local";
    let writer = format!(
        "for d in {places}; do echo {secret} > \"$d/{secret}\" 2>/dev/null && echo \"wrote $d\"; done\ntrue\n"
    );
    let (execution, stdout) = ran(&ssh, job("writer", &writer, &[])).await;
    assert_eq!(execution.exit_code, Some(0), "{execution:?}");
    assert_eq!(
        stdout,
        "wrote /tmp\nwrote /var/tmp\nwrote /dev/shm\nwrote /workspace\n"
    );
    let reader = format!(
        "for d in {places}; do [ -e \"$d/{secret}\" ] && echo \"found in $d\"; done\n\
         grep -r -l -s --exclude=main.sh {secret} /tmp /var/tmp /dev/shm \"$HOME\"\necho searched\n"
    );
    // Several readers, so some are likely to get the writer's uid again.
    for _ in 0..4 {
        let (execution, stdout) = ran(&ssh, job("reader", &reader, &[])).await;
        assert_eq!(stdout, "searched\n", "{execution:?}");
    }
    for dir in ["/tmp", "/var/tmp", "/dev/shm", "/etc", "/usr/local"] {
        let path = Path::new(dir).join(&secret);
        assert!(!path.exists(), "{} reached the host", path.display());
    }
    assert_next_job_unharmed(&ssh).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn user_namespaces_and_kernel_keyrings_are_refused() {
    let Some(ssh) = SshdBackend::start().await else {
        return;
    };
    let script = r#"unshare --user --map-root-user id 2>&1 | sed 's/.*: //'
python3 - <<'EOF'
import ctypes, os, platform
calls = {"x86_64": (272, 56, 435, 248, 250), "aarch64": (97, 220, 435, 217, 219)}
unshare, clone, clone3, add_key, keyctl = calls[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER, SIGCHLD = 0x10000000, 17
def errno_of(result):
    return "ok" if result >= 0 else os.strerror(ctypes.get_errno())
print("unshare", errno_of(libc.syscall(unshare, CLONE_NEWUSER)))
child = libc.syscall(clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
if child == 0:
    os._exit(0)
print("clone", errno_of(child))
print("clone3", errno_of(libc.syscall(clone3, 0, 0)))
print("add_key", errno_of(libc.syscall(add_key, b"user", b"left", b"secret", 6, -4)))
print("keyctl", errno_of(libc.syscall(keyctl, 0, -4, 0)))
EOF
"#;
    let (execution, stdout) = ran(&ssh, job("attacker", script, &[])).await;
    assert_eq!(execution.exit_code, Some(0), "{execution:?}");
    assert_eq!(
        stdout,
        "Operation not permitted\nunshare Operation not permitted\nclone Operation not permitted\n\
         clone3 Function not implemented\nadd_key Operation not permitted\nkeyctl Operation not permitted\n"
    );
    assert_next_job_unharmed(&ssh).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_time_dodged_by_forking_is_bounded_by_the_job_cgroup() {
    let Some(ssh) = SshdBackend::start().await else {
        return;
    };
    let planned = &ssh.backend.capabilities()[&LimitName::CpuTime];
    if planned.status != EnforcementStatus::Enforced {
        assert!(
            !openshell_test_support::in_ci(),
            "this host's sandbox has no CPU accounting cgroup: {planned:?}"
        );
        eprintln!("SKIP: no CPU accounting cgroup on this host: {planned:?}");
        return;
    }
    let marker = marker("cpu-dodge");
    // Each child burns half a second of CPU, under its own 1 s RLIMIT_CPU; twelve of them
    // burn six seconds in all, which only the job's cgroup sees.
    let script = format!(
        r#"python3 - {marker} <<'EOF'
import os, time
for _ in range(12):
    pid = os.fork()
    if pid == 0:
        while time.process_time() < 0.5:
            pass
        os._exit(0)
    os.waitpid(pid, 0)
print("survived")
EOF
"#
    );
    let mut attack = job("attacker", &script, &[]);
    attack.limits.cpu_time = Some(DurationMs::secs(1));
    attack.limits.timeout = Some(DurationMs::secs(60));
    let (execution, stdout) = ran(&ssh, attack).await;
    assert!(!stdout.contains("survived"), "{execution:?}");
    // Killed for CPU time with SIGXCPU (which sshd cannot name), not at the wall timeout.
    assert_eq!(
        (execution.ending, execution.signal),
        (Ending::Exited, Some(24)),
        "{execution:?}"
    );
    assert_eq!(
        execution.enforcement[&LimitName::CpuTime].status,
        EnforcementStatus::Enforced
    );
    assert_gone(&marker).await;
    assert_next_job_unharmed(&ssh).await;
}
