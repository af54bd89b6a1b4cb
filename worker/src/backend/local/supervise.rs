//! Running a started job to its end: stdin in, stdout and stderr out, and the timeout,
//! cancellation and output limit enforced by killing the process group.

use std::future::pending;
use std::pin::pin;
use std::time::Duration;

use nix::errno::Errno;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio::task::{JoinError, JoinHandle};

use super::child::{Group, Reaped, Spawned};
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
/// even if this future is dropped early.
pub(super) async fn supervise(
    spawned: Spawned,
    stdin: Vec<u8>,
    timeout: Option<Duration>,
    control: &JobControl,
) -> Finished {
    let Spawned {
        group,
        reaper,
        stdin: child_stdin,
        stdout,
        stderr,
        ..
    } = spawned;
    let _kill_on_drop = KillOnDrop(group.clone());
    let sink = &control.output;
    let mut io = pin!(async {
        tokio::join!(
            feed(child_stdin, stdin),
            pump(stdout, Stream::Stdout, sink),
            pump(stderr, Stream::Stderr, sink),
        );
    });
    let mut watch = pin!(watch(&group, reaper, timeout, control));
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

/// Waits for the leader to exit or for a reason to kill the group, then for the reaper.
async fn watch(
    group: &Group,
    mut reaper: JoinHandle<Result<Reaped, Errno>>,
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
        reaped = &mut reaper => return (Ending::Exited, flatten(reaped)),
        () = deadline => Ending::Timeout,
        () = control.cancel.cancelled() => Ending::Cancelled,
        () = control.output.limit_reached() => Ending::OutputLimit,
    };
    group.kill();
    (ending, flatten(reaper.await))
}

fn flatten(joined: Result<Result<Reaped, Errno>, JoinError>) -> Result<Reaped, String> {
    match joined {
        Ok(Ok(reaped)) => Ok(reaped),
        Ok(Err(errno)) => Err(format!("waiting for the job's process failed: {errno}")),
        Err(error) => Err(format!(
            "the task reaping the job's process failed: {error}"
        )),
    }
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

/// Kills the job's process group when supervision ends, however it ends.
struct KillOnDrop(Group);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill();
    }
}
