//! Running a started job to its end: stdin in, stdout and stderr out, and the timeout,
//! cancellation, output limit and (with a CPU accounting cgroup) the CPU time of the whole
//! job enforced by killing the process group.

use std::future::pending;
use std::pin::pin;
use std::time::Duration;

use nix::errno::Errno;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;

use super::cgroup::JobCgroup;
use super::child::{Process, Reaped, Spawned};
use openshell_backend::output::Flow;
use openshell_backend::{Ending, JobControl, OutputSink, Stream};

/// How long output may keep flowing after the process group is dead. Only a descendant that
/// left the group (setsid) can still hold the pipes open, and it must not hang the worker.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Bytes read from a pipe at a time.
const CHUNK: usize = 64 * 1024;

/// How often the job's cgroup CPU time is read against its `cpu_time` limit.
const CPU_POLL: Duration = Duration::from_millis(100);

/// A `cpu_time` limit for all of a job's processes, read from its cgroup.
#[derive(Debug, Clone, Copy)]
pub(super) struct CpuBudget<'a> {
    /// The job's cgroups.
    pub cgroup: &'a JobCgroup,
    /// CPU time the job may use.
    pub limit: Duration,
}

/// How a supervised job ended.
#[derive(Debug)]
pub(super) struct Finished {
    /// Why it stopped (before the out-of-memory heuristic).
    pub ending: Ending,
    /// The reaped leader, or why reaping failed.
    pub reaped: Result<Reaped, String>,
    /// Output was still open [`DRAIN_GRACE`] after the job ended: a process escaped the group.
    pub escaped: bool,
    /// The job used up its [`CpuBudget`] and was killed for it.
    pub cpu_exhausted: bool,
}

/// Feeds `stdin` to the job, collects its output into `control.output`, and stops it on
/// timeout, cancellation or output limit. Every process of the group is dead on return,
/// even if this future is dropped early (dropping the [`Process`] kills the group).
pub(super) async fn supervise(
    spawned: Spawned,
    stdin: Vec<u8>,
    timeout: Option<Duration>,
    cpu: Option<CpuBudget<'_>>,
    control: &JobControl,
) -> Finished {
    let Spawned {
        process,
        stdin: child_stdin,
        stdout,
        stderr,
        ..
    } = spawned;
    let sink = &control.output;
    let mut io = pin!(async {
        tokio::join!(
            feed(child_stdin, stdin),
            pump(stdout, Stream::Stdout, sink),
            pump(stderr, Stream::Stderr, sink),
        );
    });
    let mut watch = pin!(watch(&process, timeout, cpu, control));
    let mut io_done = false;
    let (ending, reaped, cpu_exhausted) = tokio::select! {
        finished = &mut watch => finished,
        () = &mut io => {
            io_done = true;
            watch.await
        }
    };
    let escaped = !io_done && tokio::time::timeout(DRAIN_GRACE, io).await.is_err();
    Finished {
        ending,
        reaped,
        escaped,
        cpu_exhausted,
    }
}

/// Waits for the leader to exit or for a reason to kill the group, then reaps the leader;
/// says whether the CPU budget was what killed it (reported as an exit, with SIGXCPU).
async fn watch(
    process: &Process,
    timeout: Option<Duration>,
    cpu: Option<CpuBudget<'_>>,
    control: &JobControl,
) -> (Ending, Result<Reaped, String>, bool) {
    let deadline = async {
        match timeout {
            Some(timeout) => tokio::time::sleep(timeout).await,
            None => pending().await,
        }
    };
    let spent = async {
        match cpu {
            Some(budget) => used_up(budget).await,
            None => pending().await,
        }
    };
    let (ending, cpu_exhausted) = tokio::select! {
        reaped = process.wait() => return (Ending::Exited, describe(reaped), false),
        () = deadline => (Ending::Timeout, false),
        () = control.cancel.cancelled() => (Ending::Cancelled, false),
        () = control.output.limit_reached() => (Ending::OutputLimit, false),
        () = spent => (Ending::Exited, true),
    };
    process.kill();
    (ending, describe(process.wait().await), cpu_exhausted)
}

/// Returns once the job's processes together have used `budget.limit` of CPU time.
async fn used_up(budget: CpuBudget<'_>) {
    let mut poll = tokio::time::interval(CPU_POLL);
    loop {
        poll.tick().await;
        // A small sysfs read: cheap enough for the runtime's thread.
        if budget
            .cgroup
            .cpu_used()
            .is_some_and(|used| used >= budget.limit)
        {
            return;
        }
    }
}

fn describe(reaped: Result<Reaped, Errno>) -> Result<Reaped, String> {
    reaped.map_err(|errno| format!("waiting for the job's process failed: {errno}"))
}

/// Writes the job's stdin, then closes it so the program sees end of file.
async fn feed(mut pipe: ChildStdin, bytes: Vec<u8>) {
    if !bytes.is_empty() {
        // A broken pipe means the program closed stdin or exited: its business, not an error.
        let _ = pipe.write_all(&bytes).await;
    }
}

/// Copies one output stream into the sink until end of file or the output limit.
async fn pump(mut pipe: impl AsyncRead + Unpin, stream: Stream, sink: &OutputSink) {
    let mut buffer = vec![0; CHUNK];
    loop {
        match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                if sink.write(stream, &buffer[..read]) == Flow::LimitReached {
                    return;
                }
            }
        }
    }
}
