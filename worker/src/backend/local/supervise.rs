//! Running a started job to its end: stdin in, stdout and stderr out, and the timeout,
//! cancellation and output limit enforced by killing the process group.

use std::future::pending;
use std::pin::pin;
use std::time::Duration;

use nix::errno::Errno;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;

use super::child::{Process, Reaped, Spawned};
use crate::backend::output::Flow;
use crate::backend::{Ending, JobControl, OutputSink, Stream};

/// How long output may keep flowing after the process group is dead. Only a descendant that
/// left the group (setsid) can still hold the pipes open, and it must not hang the worker.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Bytes read from a pipe at a time.
const CHUNK: usize = 64 * 1024;

/// How a supervised job ended.
#[derive(Debug)]
pub(super) struct Finished {
    /// Why it stopped (before the out-of-memory heuristic).
    pub ending: Ending,
    /// The reaped leader, or why reaping failed.
    pub reaped: Result<Reaped, String>,
    /// Output was still open [`DRAIN_GRACE`] after the job ended: a process escaped the group.
    pub escaped: bool,
}

/// Feeds `stdin` to the job, collects its output into `control.output`, and stops it on
/// timeout, cancellation or output limit. Every process of the group is dead on return,
/// even if this future is dropped early (dropping the [`Process`] kills the group).
pub(super) async fn supervise(
    spawned: Spawned,
    stdin: Vec<u8>,
    timeout: Option<Duration>,
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
    let mut watch = pin!(watch(&process, timeout, control));
    let mut io_done = false;
    let (ending, reaped) = tokio::select! {
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
    }
}

/// Waits for the leader to exit or for a reason to kill the group, then reaps the leader.
async fn watch(
    process: &Process,
    timeout: Option<Duration>,
    control: &JobControl,
) -> (Ending, Result<Reaped, String>) {
    let deadline = async {
        match timeout {
            Some(timeout) => tokio::time::sleep(timeout).await,
            None => pending().await,
        }
    };
    let ending = tokio::select! {
        reaped = process.wait() => return (Ending::Exited, describe(reaped)),
        () = deadline => Ending::Timeout,
        () = control.cancel.cancelled() => Ending::Cancelled,
        () = control.output.limit_reached() => Ending::OutputLimit,
    };
    process.kill();
    (ending, describe(process.wait().await))
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
