//! What the worker asks of a host's sandbox helper (`deploy/ssh-host/sandbox`, installed by
//! `deploy/ssh-host/prepare.sh`): the command lines of its three subcommands, run as root
//! through the transport user's one sudo rule, and the bytes of a `run` request.
//!
//! A `run` channel's exec command is constant; everything about the job goes on stdin, so job
//! data never appears in a command line and every byte is exact:
//!
//! 1. `openshell-sandbox <PROTOCOL> <n>` and `n` bytes of `key=number` lines: the limits the
//!    helper enforces with the job's cgroups and tmpfs, read by the helper as root;
//! 2. `<m>` and `m` bytes of NUL-separated `key=value` records: argv, environment, PATH,
//!    rlimits and the files, read inside the sandbox by the job's own uid;
//! 3. each file's bytes, the [`SENTINEL`] line, then the job's stdin.
//!
//! The helper answers on stdout with `@openshell <token>` (the token [`kill_command`] and
//! [`status_command`] take), then `@run` right before the program starts, then the program's
//! own output, and ends as the program's own process ended. For a request with `output`
//! patterns, the program's output is followed by [`FILES_MARKER`] and the files (see
//! `files.rs`).

use std::fmt::Write as _;

use openshell_protocol::Limits;

/// The request format this worker speaks; the helper refuses any other.
pub const PROTOCOL: u32 = 1;
/// First line of the helper's stdout: `@openshell <token>`.
pub const HEADER: &str = "@openshell ";
/// Second line, printed right before the program starts.
pub const RUN: &str = "@run";
/// The line after the files on stdin; anything else means the upload was cut short.
pub const SENTINEL: &str = "@openshell-files-end";
/// Start of the line after which the sandbox's pid 1 sends the job's files on stdout.
pub const FILES_MARKER: &str = "@openshell-files ";
/// Prefix of the helper's own error lines on stderr.
pub const SETUP_ERROR: &str = "openshell: setup: ";
/// Extra time the helper's backstop grants past the wall timeout, so the worker's own timer
/// (which reports the timeout) normally fires first.
pub const BACKSTOP_GRACE_SECS: u64 = 10;
/// Largest `/dev/shm` of a job; it is a tmpfs like the others.
pub const SHM_MAX: u64 = 64 << 20;

/// One file to write, its bytes following the headers on stdin in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative path, already confined to the working directory.
    pub path: String,
    /// Length of its content.
    pub len: usize,
    /// Permission bits.
    pub mode: u32,
}

/// The rlimits prlimit sets on the program, after clamping to the host's hard limits.
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

/// What the helper enforces around the job: its cgroups, tmpfs sizes, network and backstop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Memory of the job's cgroup in bytes (all processes, tmpfs and shared memory included).
    pub memory: Option<u64>,
    /// CPU share of the job's cgroup in thousandths of a core.
    pub millicpus: Option<u64>,
    /// Processes (and threads) of the job's cgroup.
    pub pids: Option<u64>,
    /// CPU time of the job's cgroup in milliseconds, all processes together.
    pub cpu_ms: Option<u64>,
    /// Size of each of the working directory, /tmp and /var/tmp tmpfs, in bytes.
    pub disk: u64,
    /// Size of /dev/shm in bytes.
    pub shm: u64,
    /// Share the host's network instead of a namespace with only loopback.
    pub network: bool,
    /// The job's egress directory on the host (`/tmp/openshell-egress-N`), bound into its
    /// sandbox, which then has no network but that directory's socket.
    pub egress: Option<u64>,
    /// The helper kills the job this long after it starts, should the worker be gone.
    pub backstop_ms: Option<u64>,
    /// Files to return after the job, when the request named `outputs`.
    pub files: Option<FilesSpec>,
}

/// What the sandbox's pid 1 sends back after the job (see `deploy/ssh-host/sandbox-init`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesSpec {
    /// Random per job, known to the worker and to pid 1, never to the job: it marks where the
    /// job's output ends and the files begin.
    pub token: u64,
    /// Most files sent.
    pub max_count: u64,
    /// Most bytes sent, all files together.
    pub max_bytes: u64,
    /// The request's patterns.
    pub patterns: Vec<String>,
}

impl FilesSpec {
    /// The line pid 1 prints before the files: `@openshell-files <token>`.
    pub fn marker(&self) -> Vec<u8> {
        format!("{FILES_MARKER}{}\n", self.token).into_bytes()
    }
}

/// Everything the helper and the sandbox need for one job.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Limits the helper enforces.
    pub sandbox: SandboxLimits,
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
}

/// The exec command of a job's channel: the helper reads the request from stdin.
pub fn run_command(helper: &str) -> String {
    format!("exec sudo -n {} run", quote(helper))
}

/// The exec command of a serve channel: the host's resident runner (`sandbox serve`), which
/// takes jobs as frames (see `runner.rs`).
pub fn serve_command(helper: &str) -> String {
    format!("exec sudo -n {} serve", quote(helper))
}

/// The command a second channel runs to kill the job that printed `token`.
pub fn kill_command(helper: &str, token: &str) -> String {
    format!("exec sudo -n {} kill {}", quote(helper), quote(token))
}

/// The command a second channel runs to learn which signal ended the job that printed
/// `token`, when sshd could not name it (it names only 13 signals).
pub fn status_command(helper: &str, token: &str) -> String {
    format!("exec sudo -n {} status {}", quote(helper), quote(token))
}

/// The command run once per connection: what the host's sandbox enforces.
pub fn check_command(helper: &str) -> String {
    format!("exec sudo -n {} check", quote(helper))
}

/// True for a token as the helper prints it: `<slot>-<16 hex digits>`.
pub fn is_token(token: &str) -> bool {
    token.split_once('-').is_some_and(|(slot, random)| {
        (1..=5).contains(&slot.len())
            && slot.bytes().all(|byte| byte.is_ascii_digit())
            && random.len() == 16
            && random
                .bytes()
                .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The bytes ahead of the files' contents: the helper's request and the job header.
pub fn headers(plan: &Plan) -> Vec<u8> {
    let mut bytes = sandbox_request(plan);
    bytes.extend_from_slice(&job_header(plan));
    bytes
}

/// The helper's request: `openshell-sandbox <PROTOCOL> <n>` and `n` bytes of `key=number`
/// lines, read by the helper (or the resident runner) as root.
pub fn sandbox_request(plan: &Plan) -> Vec<u8> {
    let limits = &plan.sandbox;
    let mut request = String::new();
    let numbers = [
        ("memory", limits.memory),
        ("millicpus", limits.millicpus),
        ("pids", limits.pids),
        ("cpu_ms", limits.cpu_ms),
        ("disk", Some(limits.disk)),
        ("shm", Some(limits.shm)),
        ("network", Some(u64::from(limits.network))),
        ("egress", limits.egress),
        ("backstop_ms", limits.backstop_ms),
        (
            "files_token",
            limits.files.as_ref().map(|files| files.token),
        ),
        (
            "files_max_count",
            limits.files.as_ref().map(|files| files.max_count),
        ),
        (
            "files_max_bytes",
            limits.files.as_ref().map(|files| files.max_bytes),
        ),
    ];
    for (key, value) in numbers {
        if let Some(value) = value {
            let _ = writeln!(request, "{key}={value}");
        }
    }
    for pattern in limits.files.iter().flat_map(|files| &files.patterns) {
        let hex: String = pattern.bytes().map(|byte| format!("{byte:02x}")).collect();
        let _ = writeln!(request, "output={hex}");
    }
    let mut bytes = format!("openshell-sandbox {PROTOCOL} {}\n", request.len()).into_bytes();
    bytes.extend_from_slice(request.as_bytes());
    bytes
}

/// The job header: `<m>` and `m` bytes of NUL-separated records, read inside the sandbox.
pub fn job_header(plan: &Plan) -> Vec<u8> {
    let mut records: Vec<String> = plan.argv.iter().map(|arg| format!("arg={arg}")).collect();
    records.extend(
        plan.env
            .iter()
            .map(|(key, value)| format!("env={key}={value}")),
    );
    records.push(format!("path={}", plan.path));
    records.extend(
        rlimit_args(&plan.rlimits)
            .into_iter()
            .map(|arg| format!("rlimit={arg}")),
    );
    records.extend(
        plan.files
            .iter()
            .map(|file| format!("file={:o}:{}:{}", file.mode & 0o777, file.len, file.path)),
    );
    let job = records.join("\0");
    let mut bytes = format!("{}\n", job.len()).into_bytes();
    bytes.extend_from_slice(job.as_bytes());
    bytes
}

fn rlimit_args(rlimits: &Rlimits) -> Vec<String> {
    let mut args = Vec::new();
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
    args
}

/// `text` as one single-quoted shell word.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The rlimits for `limits`, each clamped to `hard(resource)` (the host's hard limit, as
/// prlimit names it), since the job's uid cannot raise a hard limit. `memory_cgroup` and
/// `pids_cgroup` say what the job's cgroup already bounds for all its processes together.
pub fn rlimits(
    limits: &Limits,
    (memory_cgroup, pids_cgroup): (bool, bool),
    hard: impl Fn(&str) -> Option<u64>,
) -> Rlimits {
    let clamp =
        |resource: &str, wanted: u64| hard(resource).map_or(wanted, |hard| wanted.min(hard));
    Rlimits {
        // With a cgroup, it is the limit; RLIMIT_AS would only break runtimes like V8.
        address_space: limits
            .memory
            .filter(|_| !memory_cgroup)
            .map(|memory| clamp("AS", memory.bytes())),
        // The hard limit is one second above the soft one (SIGXCPU, then SIGKILL).
        cpu_seconds: limits.cpu_time.map(|cpu| {
            let wanted = cpu.millis().div_ceil(1000).max(1);
            match hard("CPU") {
                Some(hard) if wanted >= hard => hard.saturating_sub(1).max(1),
                _ => wanted,
            }
        }),
        // The job's uid is its own, so RLIMIT_NPROC counts this job's processes only.
        processes: limits
            .processes
            .filter(|_| !pids_cgroup)
            .map(|count| clamp("NPROC", count)),
        open_files: limits.open_files.map(|count| clamp("NOFILE", count)),
        file_size: limits.disk.map(|disk| clamp("FSIZE", disk.bytes())),
    }
}

#[cfg(test)]
mod tests {
    use openshell_protocol::{ByteSize, DurationMs};

    use super::*;

    fn plan() -> Plan {
        Plan {
            sandbox: SandboxLimits {
                memory: Some(64 << 20),
                cpu_ms: Some(1500),
                disk: 1 << 20,
                shm: 1 << 16,
                ..SandboxLimits::default()
            },
            path: "/usr/bin:/bin".into(),
            env: vec![("GREETING".into(), "it's\n\"quoted\"".into())],
            argv: vec!["sh".into(), "-c".into(), "echo 'hi'".into()],
            files: vec![FileEntry {
                path: "a/b.txt".into(),
                len: 3,
                mode: 0o100644,
            }],
            rlimits: Rlimits {
                open_files: Some(64),
                cpu_seconds: Some(2),
                ..Rlimits::default()
            },
        }
    }

    #[test]
    fn headers_carry_limits_as_lines_and_the_job_as_records() {
        let bytes = headers(&plan());
        let text = String::from_utf8(bytes).unwrap();
        let (first, rest) = text.split_once('\n').unwrap();
        let request = "memory=67108864\ncpu_ms=1500\ndisk=1048576\nshm=65536\nnetwork=0\n";
        assert_eq!(first, format!("openshell-sandbox 1 {}", request.len()));
        let (request_part, rest) = rest.split_at(request.len());
        assert_eq!(request_part, request);
        let (length, job) = rest.split_once('\n').unwrap();
        assert_eq!(length.parse::<usize>().unwrap(), job.len());
        let records: Vec<&str> = job.split('\0').collect();
        assert_eq!(
            records,
            [
                "arg=sh",
                "arg=-c",
                "arg=echo 'hi'",
                "env=GREETING=it's\n\"quoted\"",
                "path=/usr/bin:/bin",
                "rlimit=--cpu=2:3",
                "rlimit=--nofile=64",
                "file=644:3:a/b.txt",
            ]
        );
    }

    #[test]
    fn commands_quote_the_helper_and_tokens_are_checked() {
        assert_eq!(
            run_command("/usr/local/libexec/openshell/sandbox"),
            "exec sudo -n '/usr/local/libexec/openshell/sandbox' run"
        );
        assert!(kill_command("/h", "3-0123456789abcdef").ends_with("kill '3-0123456789abcdef'"));
        assert!(
            status_command("/h", "3-0123456789abcdef").ends_with("status '3-0123456789abcdef'")
        );
        assert!(check_command("/h'x").contains("'/h'\\''x'"));
        assert!(is_token("63-0123456789abcdef"));
        for bad in [
            "",
            "x-0123456789abcdef",
            "1-0123",
            "1-0123456789ABCDEF",
            "1;-0123456789abcdef",
        ] {
            assert!(!is_token(bad), "{bad}");
        }
    }

    #[test]
    fn rlimits_are_clamped_and_left_to_cgroups_where_there_are_some() {
        let limits = Limits {
            memory: Some(ByteSize::mib(64)),
            cpu_time: Some(DurationMs(1500)),
            processes: Some(100),
            open_files: Some(100_000),
            ..Limits::default()
        };
        let hard = |resource: &str| (resource == "NOFILE").then_some(20_000);
        let plain = rlimits(&limits, (false, false), hard);
        assert_eq!(plain.address_space, Some(64 << 20));
        assert_eq!(plain.cpu_seconds, Some(2));
        assert_eq!(plain.processes, Some(100));
        assert_eq!(plain.open_files, Some(20_000));
        let cgroup = rlimits(&limits, (true, true), hard);
        assert_eq!((cgroup.address_space, cgroup.processes), (None, None));
    }
}
