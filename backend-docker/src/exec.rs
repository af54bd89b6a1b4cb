//! Running a session job's exec to its end (a session's container serves many jobs, so its
//! jobs are execs; a pool job is a frame to the resident runner, [`super::attach`]): stdin in (the files' tar, then the job's bytes), stdout and
//! stderr out through the output sink, and the wall timeout, cancellation and output limit
//! watched. Stopping is the caller's: it kills the whole container, since killing the exec's
//! client side would leave the job's processes running.
//!
//! The program has ended when the engine says its exec is no longer running: the output can
//! end earlier (the program closed it) or later (a background process still holds it).

use std::future::pending;
use std::pin::{Pin, pin};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as ApiError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::attach::{Stop, Supervised};
use super::command::Command;
use openshell_backend::output::Flow;
use openshell_backend::{JobControl, OutputSink, Stream as OutputStream};

/// Largest frame read from the exec's output at once.
const OUTPUT_CAPACITY: usize = 64 * 1024;
/// While output flows, the engine is first asked whether the program ended after this...
const SLOW_POLL_AFTER: Duration = Duration::from_secs(1);
/// ...and then this often.
const SLOW_POLL: Duration = Duration::from_millis(500);
/// Once output has ended, the first look comes at once, the next ones after this, doubling...
const FAST_POLL: Duration = Duration::from_millis(5);
/// ...up to this.
const FAST_POLL_MAX: Duration = Duration::from_millis(200);
/// How long output may keep flowing after the program ended: only a background process that
/// kept it open can still write, and it must not hold the job.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Creates the exec of `command` in `container` as `user` in `workdir`.
pub(super) async fn create(
    docker: &Docker,
    container: &str,
    command: &Command,
    user: &str,
    workdir: &str,
) -> Result<String, ApiError> {
    let options = CreateExecOptions {
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        env: Some(command.env.clone()),
        cmd: Some(command.cmd.clone()),
        user: Some(user.to_string()),
        working_dir: Some(workdir.to_string()),
        ..CreateExecOptions::default()
    };
    Ok(docker.create_exec(container, options).await?.id)
}

/// Starts exec `exec` and runs it until it ends, times out, is cancelled or fills the output.
/// `Err` only when the exec could not be started.
pub(super) async fn supervise(
    docker: &Docker,
    exec: &str,
    input: (&[u8], &[u8]),
    timeout: Option<Duration>,
    control: &JobControl,
) -> Result<Supervised, ApiError> {
    let options = StartExecOptions {
        detach: false,
        tty: false,
        output_capacity: Some(OUTPUT_CAPACITY),
    };
    let started = Instant::now();
    let StartExecResults::Attached {
        mut output,
        input: stdin,
    } = docker.start_exec(exec, Some(options)).await?
    else {
        return Err(ApiError::DockerStreamError {
            error: "the engine started the exec detached".into(),
        });
    };
    let deadline = async {
        match timeout {
            Some(timeout) => tokio::time::sleep_until((started + timeout).into()).await,
            None => pending().await,
        }
    };
    let mut deadline = pin!(deadline);
    let mut feed = pin!(feed(stdin, input));
    let mut pump = pin!(pump(&mut output, &control.output));
    let mut exit_watch = pin!(wait_exit(
        docker,
        exec,
        SLOW_POLL_AFTER,
        SLOW_POLL,
        SLOW_POLL
    ));
    let (mut fed, mut output_open) = (false, true);
    let stop = loop {
        tokio::select! {
            () = &mut feed, if !fed => fed = true,
            ended = &mut pump, if output_open => match ended {
                Ok(()) if control.output.is_limit_reached() => break Stop::OutputLimit,
                Ok(()) => {
                    output_open = false;
                    exit_watch.set(wait_exit(docker, exec, Duration::ZERO, FAST_POLL, FAST_POLL_MAX));
                }
                Err(error) => break Stop::Broken(error),
            },
            exit = &mut exit_watch => match exit {
                Ok(exit_code) => {
                    // A background process still holding the output gets the grace, then runs
                    // on in the session, unread (the README says so).
                    let escaped = output_open
                        && tokio::time::timeout(DRAIN_GRACE, &mut pump).await.is_err();
                    break Stop::Ended { exit_code, escaped };
                }
                Err(error) => break Stop::Broken(error),
            },
            () = &mut deadline => break Stop::Timeout,
            () = control.cancel.cancelled() => break Stop::Cancelled,
            () = control.output.limit_reached() => break Stop::OutputLimit,
        }
    };
    Ok(Supervised {
        stop,
        wall_time: started.elapsed(),
    })
}

/// Writes the prologue's input then the job's stdin, then closes stdin so the job sees end of
/// file. A write error means the job exited or closed stdin: its business, not an error.
async fn feed(mut stdin: Pin<Box<dyn AsyncWrite + Send>>, (prologue, job): (&[u8], &[u8])) {
    for bytes in [prologue, job] {
        if !bytes.is_empty() && stdin.write_all(bytes).await.is_err() {
            return;
        }
    }
    let _ = stdin.shutdown().await;
}

/// Copies the exec's output frames into the sink until the end or the output limit.
async fn pump(
    output: &mut Pin<Box<dyn Stream<Item = Result<LogOutput, ApiError>> + Send>>,
    sink: &OutputSink,
) -> Result<(), ApiError> {
    while let Some(frame) = output.next().await {
        let (stream, bytes) = match frame? {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (OutputStream::Stdout, message)
            }
            LogOutput::StdErr { message } => (OutputStream::Stderr, message),
            LogOutput::StdIn { .. } => continue,
        };
        if sink.write(stream, &bytes) == Flow::LimitReached {
            return Ok(());
        }
    }
    Ok(())
}

/// Resolves once the engine says exec `exec` is no longer running, with its exit code
/// (`None` when its container died under it). Looks after `first`, then every `every`,
/// doubling up to `max`.
async fn wait_exit(
    docker: &Docker,
    exec: &str,
    first: Duration,
    every: Duration,
    max: Duration,
) -> Result<Option<i64>, ApiError> {
    tokio::time::sleep(first).await;
    let mut every = every;
    loop {
        let inspect = docker.inspect_exec(exec).await?;
        if inspect.running != Some(true) {
            return Ok(inspect.exit_code);
        }
        tokio::time::sleep(every).await;
        every = (every * 2).min(max);
    }
}
