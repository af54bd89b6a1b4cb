//! The POSIX shell that runs one job on the remote host.
//!
//! The exec request carries only a constant bootstrap, `eval "$(head -c N)"`; the wrapper
//! itself, the request's files, a sentinel line and then the job's stdin follow on the
//! channel's stdin, so job data never appears in a command line and every byte is exact
//! (`head -c` and `read` consume precisely what they are told). The wrapper, running as the
//! session leader sshd made (its pid is the job's process group):
//!
//! 1. prints `@openshell <pid>`, so the worker can kill the group from another channel;
//! 2. makes a fresh `mktemp -d` directory and starts a *keeper* in a new session, outside the
//!    job's group: it waits for the job to end (or a backstop timeout, should the worker be
//!    gone), kills whatever is left of the group (and the job's cgroup), and removes the
//!    directory;
//! 3. writes the files, checks the sentinel, joins the job's cgroup when the host has one,
//!    prints `@run`, and `exec`s `prlimit` (the rlimits) into `env -i` (the environment) into
//!    the program, so sshd reports the program's own exit status or signal.

use std::fmt::Write as _;

use openshell_protocol::Limits;

/// First line of the wrapper's stdout: `@openshell <pgid>`.
pub const HEADER: &str = "@openshell ";
/// Second line, printed right before the program starts.
pub const RUN: &str = "@run";
/// The line after the files on stdin; anything else means the upload was cut short.
pub const SENTINEL: &str = "@openshell-files-end";
/// Prefix of the wrapper's own error lines on stderr.
pub const SETUP_ERROR: &str = "openshell: setup: ";
/// Extra time the remote backstop grants past the wall timeout, so the worker's own timer
/// (which reports the timeout) normally fires first.
pub const BACKSTOP_GRACE_SECS: u64 = 10;

/// The keeper: `$1` job pgid, `$2` directory, `$3` backstop seconds (0: none), `$4` cgroup.
/// Once the group is empty (its kill fails) and there is no cgroup, it stops killing at once,
/// and it makes the directory writable only when a plain `rm -rf` fails: most jobs then cost
/// no process after they end but the `rm`.
const KEEPER: &str = r#"w=$1 d=$2 t=$3 cg=$4
if [ "$t" -gt 0 ]; then timeout "$t" tail --pid="$w" -s 0.05 -f /dev/null; else tail --pid="$w" -s 0.05 -f /dev/null; fi
for i in 1 2 3; do
  kill -s KILL -- "-$w" 2>/dev/null || [ -n "$cg" ] || break
  [ -n "$cg" ] && [ -e "$cg/cgroup.kill" ] && echo 1 > "$cg/cgroup.kill" 2>/dev/null
  sleep 0.05
done
[ -n "$cg" ] && rmdir "$cg" 2>/dev/null
rm -rf -- "$d" 2>/dev/null || { chmod -R u+rwx -- "$d" 2>/dev/null; rm -rf -- "$d"; }"#;

/// Tools the wrapper needs on the host (coreutils and util-linux).
pub const TOOLS: [&str; 7] = [
    "setsid", "prlimit", "timeout", "tail", "mktemp", "head", "env",
];

/// One file to write, its bytes following the wrapper on stdin in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative path, already confined to the job directory.
    pub path: String,
    /// Length of its content.
    pub len: usize,
    /// Permission bits.
    pub mode: u32,
}

/// The rlimits to set, after clamping to the host's hard limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rlimits {
    /// RLIMIT_AS in bytes.
    pub address_space: Option<u64>,
    /// RLIMIT_CPU soft seconds (hard is one more).
    pub cpu_seconds: Option<u64>,
    /// RLIMIT_NPROC.
    pub processes: Option<u64>,
    /// RLIMIT_NOFILE.
    pub open_files: Option<u64>,
    /// RLIMIT_FSIZE in bytes.
    pub file_size: Option<u64>,
}

/// Limits applied through the job's own cgroup v2 directory.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupPlan {
    /// The delegated parent directory; the job's is `<parent>/job-<pgid>`.
    pub parent: String,
    /// `memory.max` in bytes.
    pub memory: Option<u64>,
    /// CPU share in cores, for `cpu.max`.
    pub cpus: Option<f64>,
    /// `pids.max`.
    pub pids: Option<u64>,
}

/// Everything the wrapper needs for one job.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Where `mktemp -d` creates the job directory.
    pub work_root: String,
    /// PATH for the program.
    pub path: String,
    /// Variables on top of PATH, HOME, TMPDIR and LANG.
    pub env: Vec<(String, String)>,
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Files, in upload order.
    pub files: Vec<FileEntry>,
    /// rlimits.
    pub rlimits: Rlimits,
    /// cgroup limits, when the host has a usable delegated cgroup.
    pub cgroup: Option<CgroupPlan>,
    /// Backstop for the keeper in seconds, 0 for none.
    pub backstop_secs: u64,
}

/// The exec request: reads and runs the `len`-byte wrapper from stdin.
pub fn bootstrap(len: usize) -> String {
    format!("eval \"$(head -c {len})\"")
}

/// The command a second channel runs to kill job group `pgid` (and its cgroup).
pub fn kill_command(pgid: u32, cgroup_parent: Option<&str>) -> String {
    let mut command = format!("kill -s KILL -- -{pgid} 2>/dev/null; ");
    if let Some(parent) = cgroup_parent {
        let file = quote(&format!("{parent}/job-{pgid}/cgroup.kill"));
        let _ = write!(command, "[ -e {file} ] && echo 1 > {file} 2>/dev/null; ");
    }
    command.push_str("true");
    command
}

/// The command run once per connection: remote uid, missing tools, hard limits, cgroup.
pub fn probe_command(cgroup_parent: Option<&str>) -> String {
    let mut command = String::from("printf 'uid=%s\\n' \"$(id -u)\"\n");
    let _ = writeln!(
        command,
        "for t in {}; do command -v \"$t\" >/dev/null 2>&1 || printf 'missing=%s\\n' \"$t\"; done",
        TOOLS.join(" ")
    );
    command.push_str(
        "prlimit --noheadings --raw --output=RESOURCE,HARD 2>/dev/null | while read -r r h; do printf 'hard=%s=%s\\n' \"$r\" \"$h\"; done\n",
    );
    if let Some(parent) = cgroup_parent {
        // Writable files are not enough: cgroup v2 lets a process move only within a subtree
        // whose common ancestor's cgroup.procs it may write, so try a real move.
        let _ = writeln!(
            command,
            "cg={}; t=\"$cg/probe-$$\"; r=unusable\n\
             if grep -qw memory \"$cg/cgroup.subtree_control\" 2>/dev/null && grep -qw cpu \"$cg/cgroup.subtree_control\" \
             && grep -qw pids \"$cg/cgroup.subtree_control\" && mkdir \"$t\" 2>/dev/null; then\n\
             sh -c 'echo $$ > \"$1/cgroup.procs\"' probe \"$t\" 2>/dev/null && r=ok; rmdir \"$t\" 2>/dev/null; fi\n\
             echo cgroup=$r",
            quote(parent)
        );
    }
    command
}

/// The wrapper script for `plan`.
pub fn wrapper(plan: &Plan) -> String {
    let mut script = String::with_capacity(2048);
    let fail = |what: &str| {
        format!(
            "{{ printf '{SETUP_ERROR}%s\\n' {} >&2; exit 1; }}",
            quote(what)
        )
    };
    script.push_str("w=$$\n");
    let _ = writeln!(script, "printf '{HEADER}%s\\n' \"$w\"");
    script.push_str("umask 077\n");
    let _ = writeln!(
        script,
        "d=$(mktemp -d {}/openshell-job.XXXXXXXXXX 2>&1) || {{ printf '{SETUP_ERROR}%s\\n' \"$d\" >&2; exit 1; }}",
        quote(&plan.work_root)
    );
    let cgroup_dir = plan
        .cgroup
        .as_ref()
        .map(|cgroup| format!("{}/job-", quote(&cgroup.parent)));
    let _ = writeln!(
        script,
        "cg={}\nsetsid sh -c {} openshell-keeper \"$w\" \"$d\" {} \"$cg\" </dev/null >/dev/null 2>&1 &",
        cgroup_dir.map_or_else(|| "''".to_string(), |dir| format!("{dir}\"$w\"")),
        quote(KEEPER),
        plan.backstop_secs
    );
    write_files(&mut script, &plan.files, &fail);
    let _ = writeln!(
        script,
        "IFS= read -r s; [ \"$s\" = {} ] || {}",
        quote(SENTINEL),
        fail("the upload was cut short (connection lost?)")
    );
    if let Some(cgroup) = &plan.cgroup {
        join_cgroup(&mut script, cgroup, &fail);
    }
    let _ = writeln!(
        script,
        "cd \"$d\" || {}",
        fail("cannot enter the job directory")
    );
    let _ = writeln!(script, "printf '{RUN}\\n'");
    script.push_str(&exec_line(plan));
    script
}

fn write_files(script: &mut String, files: &[FileEntry], fail: &dyn Fn(&str) -> String) {
    let mut dirs: Vec<String> = files
        .iter()
        .filter_map(|file| file.path.rsplit_once('/'))
        .map(|(parent, _)| format!("\"$d\"/{}", quote(parent)))
        .collect();
    dirs.dedup();
    if !dirs.is_empty() {
        let _ = writeln!(
            script,
            "mkdir -p -- {} || {}",
            dirs.join(" "),
            fail("creating the job's directories failed")
        );
    }
    for file in files {
        let target = format!("\"$d\"/{}", quote(&file.path));
        if file.len == 0 {
            let _ = writeln!(script, ": > {target} || {}", fail("writing a file failed"));
        } else {
            let _ = writeln!(
                script,
                "head -c {} > {target} || {}",
                file.len,
                fail("writing a file failed")
            );
        }
        if file.mode & 0o777 != 0o600 {
            let _ = writeln!(script, "chmod {:o} -- {target}", file.mode & 0o777);
        }
    }
}

fn join_cgroup(script: &mut String, cgroup: &CgroupPlan, fail: &dyn Fn(&str) -> String) {
    let mut writes = vec!["mkdir \"$cg\"".to_string()];
    if let Some(memory) = cgroup.memory {
        writes.push(format!("echo {memory} > \"$cg/memory.max\""));
        writes.push(
            "{ [ ! -e \"$cg/memory.swap.max\" ] || echo 0 > \"$cg/memory.swap.max\"; }".into(),
        );
    }
    if let Some(cpus) = cgroup.cpus {
        let quota = ((cpus * 100_000.0).ceil() as u64).max(1000);
        writes.push(format!("echo '{quota} 100000' > \"$cg/cpu.max\""));
    }
    if let Some(pids) = cgroup.pids {
        writes.push(format!("echo {pids} > \"$cg/pids.max\""));
    }
    writes.push("echo \"$w\" > \"$cg/cgroup.procs\"".into());
    let _ = writeln!(
        script,
        "{{ {}; }} 2>/dev/null || {}",
        writes.join(" && "),
        fail("placing the job in its cgroup failed")
    );
}

fn prlimit_args(rlimits: &Rlimits) -> String {
    let mut args = vec!["--core=0".to_string()];
    if let Some(bytes) = rlimits.address_space {
        args.push(format!("--as={bytes}"));
    }
    if let Some(seconds) = rlimits.cpu_seconds {
        args.push(format!("--cpu={seconds}:{}", seconds + 1));
    }
    if let Some(count) = rlimits.processes {
        args.push(format!("--nproc={count}"));
    }
    if let Some(count) = rlimits.open_files {
        args.push(format!("--nofile={count}"));
    }
    if let Some(bytes) = rlimits.file_size {
        args.push(format!("--fsize={bytes}"));
    }
    args.join(" ")
}

/// rlimits are set by exec'ing prlimit, not by a separate `prlimit --pid` run: one process
/// fewer per job. They are clamped to the host's hard limits, so prlimit does not fail on them.
fn exec_line(plan: &Plan) -> String {
    let mut line = format!(
        "exec prlimit {} env -i {} \"HOME=$d\" \"TMPDIR=$d\" LANG=C.UTF-8",
        prlimit_args(&plan.rlimits),
        quote(&format!("PATH={}", plan.path))
    );
    for (key, value) in &plan.env {
        line.push(' ');
        line.push_str(&quote(&format!("{key}={value}")));
    }
    for arg in &plan.argv {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line.push('\n');
    line
}

/// `text` as one single-quoted shell word.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The rlimits for `limits`, each clamped to `hard(resource)` (the host's hard limit, as
/// prlimit names it), since an unprivileged process cannot raise a hard limit.
pub fn rlimits(limits: &Limits, with_cgroup: bool, hard: impl Fn(&str) -> Option<u64>) -> Rlimits {
    let clamp =
        |resource: &str, wanted: u64| hard(resource).map_or(wanted, |hard| wanted.min(hard));
    Rlimits {
        // With a cgroup, memory.max is the limit; RLIMIT_AS would only break runtimes like V8.
        address_space: limits
            .memory
            .filter(|_| !with_cgroup)
            .map(|memory| clamp("AS", memory.bytes())),
        // The hard limit is one second above the soft one (SIGXCPU, then SIGKILL).
        cpu_seconds: limits.cpu_time.map(|cpu| {
            let wanted = cpu.millis().div_ceil(1000).max(1);
            match hard("CPU") {
                Some(hard) if wanted >= hard => hard.saturating_sub(1).max(1),
                _ => wanted,
            }
        }),
        processes: limits
            .processes
            .filter(|_| !with_cgroup)
            .map(|count| clamp("NPROC", count)),
        open_files: limits.open_files.map(|count| clamp("NOFILE", count)),
        file_size: limits.disk.map(|disk| clamp("FSIZE", disk.bytes())),
    }
}

#[cfg(test)]
mod tests;
