//! The backend conformance suite: one set of cases, run against every backend (feature
//! `testing`).
//!
//! A backend's test file builds its backend once per case, with one line:
//!
//! ```ignore
//! openshell_backend::conformance_suite!(async { Arc::new(MyBackend::new()) as Arc<dyn Backend> });
//! ```
//!
//! It needs `tokio` (with `macros` and `rt-multi-thread`) among the test's dependencies.
//!
//! Jobs are built the way the worker builds them: `languages::builtin()` turns a language and
//! code into an argv and a code file. Hostile cases always carry memory and process limits, so
//! a backend that fails to enforce them fails the case without harming the machine.

mod cases;
mod egress;
mod files;
mod hostile;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::language as languages;
use crate::{Backend, CapturedOutput, Ending, Execution, Job, JobControl, OutputSink};
use openshell_protocol::{ByteSize, DurationMs, EnforcementStatus, Limits, Payload};
use tokio_util::sync::CancellationToken;

pub use cases::*;
pub use egress::*;
pub use files::*;
pub use hostile::*;

/// Expands to one `#[tokio::test]` per conformance case, each running against the backend
/// that `$backend` (an async expression yielding `Arc<dyn Backend>`) builds.
#[macro_export]
macro_rules! conformance_suite {
    ($backend:expr) => {
        $crate::conformance_suite!(@cases $backend;
            hello_python, hello_node, hello_bash, hello_sh, exit_codes, killed_by_a_signal, stdin_binary_echo,
            stdin_empty_is_closed, stdin_unread_does_not_block, env_visible_worker_env_hidden,
            files_nested_binary_and_executable, conflicting_files_are_invalid, missing_program_exits_127, enforcement_report_lists_every_limit,
            wall_timeout, memory_bomb, fork_bomb, output_flood, cancellation, no_process_left_behind,
            network_to_a_host_loopback_port_fails, setsid_survivors_die_and_do_not_decide_the_verdict,
            nothing_is_left_for_the_next_job, a_concurrent_jobs_environ_is_out_of_reach,
            user_namespaces_are_refused, memory_across_processes, shared_memory_counts_as_memory,
            cpu_time_is_not_dodged_by_forking, live_output_is_the_output_in_order,
            files_back_are_the_matching_regular_files, files_back_respect_the_caps,
            files_back_never_leave_the_working_directory, egress_jobs_get_out_only_through_their_socket,
        );
    };
    (@cases $backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $case() {
                let backend: ::std::sync::Arc<dyn $crate::Backend> = $backend.await;
                $crate::testing::$case(backend.as_ref()).await;
            }
        )*
    };
}

/// Limits for well-behaved jobs: short, so a hung backend fails fast.
pub fn quiet_limits() -> Limits {
    Limits {
        timeout: Some(DurationMs::secs(20)),
        output: Some(ByteSize::mib(1)),
        ..Limits::default()
    }
}

/// Limits for hostile jobs: memory and processes are always capped.
pub fn hostile_limits() -> Limits {
    Limits {
        memory: Some(ByteSize::mib(512)),
        // Generous: RLIMIT_NPROC backends count every process of the job's user, and the fork
        // bomb case may hold 64 of them while this job runs.
        processes: Some(256),
        ..quiet_limits()
    }
}

/// A job running `code` in `language`, resolved as the worker resolves it.
pub fn code_job(language: &str, code: &str, args: &[&str]) -> Job {
    let spec = languages::builtin()
        .remove(language)
        .unwrap_or_else(|| panic!("no builtin language {language}"));
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    let (argv, file) = spec.resolve(code, &args);
    let mut job = argv_job(&[]);
    job.language = Some(language.to_string());
    job.argv = argv;
    job.files = vec![file];
    job
}

/// A job running `argv` directly.
pub fn argv_job(argv: &[&str]) -> Job {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    Job {
        id: format!("conformance-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
        tenant: "conformance".to_string(),
        language: None,
        argv: argv.iter().map(|arg| arg.to_string()).collect(),
        stdin: Payload::default(),
        env: BTreeMap::new(),
        files: Vec::new(),
        limits: quiet_limits(),
        network: false,
        egress: None,
        outputs: None,
    }
}

/// What a case looks at after a run.
#[derive(Debug)]
pub struct Run {
    /// The backend's answer.
    pub execution: Execution,
    /// The output as the sink kept it.
    pub output: CapturedOutput,
    /// Wall time of `execute` as the caller saw it.
    pub elapsed: Duration,
}

impl Run {
    /// Stdout as text.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    /// Stderr as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

/// Runs `job` to its end, with a fresh control.
pub async fn run(backend: &dyn Backend, job: Job) -> Run {
    run_with(backend, job, CancellationToken::new()).await
}

/// Runs `job` to its end with `cancel`, and checks its enforcement report.
pub async fn run_with(backend: &dyn Backend, job: Job, cancel: CancellationToken) -> Run {
    let limit = job.limits.output.map_or(u64::MAX, ByteSize::bytes);
    let control = JobControl {
        cancel,
        output: OutputSink::new(limit),
    };
    let started = Instant::now();
    let execution = backend
        .execute(job.clone(), control.clone())
        .await
        .unwrap_or_else(|error| panic!("job {} failed in the backend: {error}", job.id));
    let run = Run {
        execution,
        output: control.output.snapshot(),
        elapsed: started.elapsed(),
    };
    assert_enforcement(backend, &job, &run);
    run
}

/// The report has exactly one entry per limit the job set, consistent with the capabilities.
pub fn assert_enforcement(backend: &dyn Backend, job: &Job, run: &Run) {
    let report = &run.execution.enforcement;
    let wanted: Vec<_> = job.limits.iter().map(|(name, _)| name).collect();
    let reported: Vec<_> = report.keys().copied().collect();
    assert_eq!(reported, wanted, "enforcement report keys for {run:?}");
    let capabilities = backend.capabilities();
    for (name, enforcement) in report {
        let enforceable = capabilities.contains_key(name);
        let enforced = enforcement.status != EnforcementStatus::NotEnforced;
        assert_eq!(
            enforced, enforceable,
            "{name}: {enforcement:?} vs capabilities"
        );
        assert!(!enforcement.mechanism.is_empty(), "{name} has no mechanism");
    }
}

/// The program exited on its own with `code`.
pub fn assert_exited(run: &Run, code: i32) {
    assert_eq!(
        run.execution.ending,
        Ending::Exited,
        "{run:?}\nstderr: {}",
        run.stderr()
    );
    assert_eq!(
        run.execution.exit_code,
        Some(code),
        "{run:?}\nstderr: {}",
        run.stderr()
    );
    assert_eq!(run.execution.signal, None, "{run:?}");
}

/// A marker unique to this test process and call, to find a job's processes by.
pub fn marker(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let serial = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("openshell-marker-{name}-{}-{serial}", std::process::id())
}

/// Asks the backend (the sandbox may be remote) and this host (where the sandbox may be local,
/// and a job's own view may be only its own pid namespace) whether any process whose command
/// line contains `marker` is alive, retrying briefly while killed processes exit.
pub async fn assert_no_process_with(backend: &dyn Backend, marker: &str) {
    let mut left: Vec<String> = Vec::new();
    for _ in 0..50 {
        left = host_processes_with(marker);
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        left.is_empty(),
        "processes with {marker} survived the job on this host: {left:?}"
    );
    let code = format!(
        r#"for attempt in 1 2 3 4 5 6 7 8 9 10; do
  found=""
  for p in /proc/[0-9]*; do
    [ -r "$p/cmdline" ] || continue
    while IFS= read -r -d '' arg; do
      case "$arg" in *{marker}*) found="$found ${{p#/proc/}}" ;; esac
    done < "$p/cmdline"
  done
  if [ -z "$found" ]; then echo clean; exit 0; fi
  sleep 0.2
done
echo "left behind:$found"
exit 1
"#
    );
    let run = run(backend, code_job("bash", &code, &[])).await;
    assert_exited(&run, 0);
    assert_eq!(
        run.stdout(),
        "clean\n",
        "processes with {marker} survived the job"
    );
}

/// The pids of this host's processes whose command line contains `marker`.
fn host_processes_with(marker: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
        })
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}
