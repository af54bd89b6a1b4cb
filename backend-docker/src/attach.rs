//! Running a job through its sandbox's resident runner (`runner`) to its end, over the
//! container's attach connection (opened before the container started, so nothing is missed):
//! the job frame, the files' tar and the job's stdin in; stdout and stderr out through the
//! output sink; the wall timeout, cancellation and output limit watched. Stopping is the
//! caller's: it kills the whole container.
//!
//! The program has ended when the runner's end marker has arrived on both streams (each after
//! all of its stream's job output). A stream that ends without it means the container died
//! under the job (it killed the runner or the init) or the daemon went away: the caller asks
//! the engine which.

use std::future::pending;
use std::pin::{Pin, pin};
use std::time::{Duration, Instant};

use bollard::container::{AttachContainerResults, LogOutput};
use bollard::errors::Error as ApiError;
use futures::{FutureExt, Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::runner::{End, Marker};
use openshell_backend::output::Flow;
use openshell_backend::{JobControl, OutputSink, Stream as OutputStream};

/// How long the second stream's end marker may lag the first's: the runner writes them
/// back to back, so only a dying container delays it.
const MARKER_LAG: Duration = Duration::from_secs(1);

/// Why supervision stopped.
#[derive(Debug)]
pub(super) enum Stop {
    /// The program ended, with this exit code.
    Ended {
        /// The program's exit code.
        exit_code: Option<i64>,
        /// Output was still open a second after the program ended.
        escaped: bool,
    },
    /// The output ended without the runner's end marker: the container died under the job
    /// (it killed the runner or the init), or the daemon went away; the caller asks which.
    Vanished,
    /// The wall timeout passed.
    Timeout,
    /// The job was cancelled.
    Cancelled,
    /// The output limit was reached.
    OutputLimit,
    /// The connection to the daemon broke mid-run.
    Broken(ApiError),
}

/// How a supervised job went.
#[derive(Debug)]
pub(super) struct Supervised {
    /// Why it stopped.
    pub stop: Stop,
    /// From the frame's sending to that moment.
    pub wall_time: Duration,
}

/// Whether a warm sandbox's attach connection is still quiet: a runner waiting for its frame
/// writes nothing, so anything (output, an error, the end) means the sandbox is unusable.
pub(super) fn is_waiting(attached: &mut AttachContainerResults) -> bool {
    attached.output.next().now_or_never().is_none()
}

/// Hands the job to the runner on `attached` (`frame`, then `input`: the files' tar and the
/// job's stdin) and runs it until it ends, times out, is cancelled or fills the output.
pub(super) async fn supervise(
    attached: AttachContainerResults,
    (frame, input): (&[u8], (&[u8], &[u8])),
    nonce: &str,
    timeout: Option<Duration>,
    control: &JobControl,
) -> Supervised {
    let AttachContainerResults {
        mut output,
        input: stdin,
    } = attached;
    let started = Instant::now();
    let deadline = async {
        match timeout {
            Some(timeout) => tokio::time::sleep_until((started + timeout).into()).await,
            None => pending().await,
        }
    };
    let mut deadline = pin!(deadline);
    let mut feed = pin!(feed(stdin, [frame, input.0, input.1]));
    let mut markers = [Marker::new(nonce), Marker::new(nonce)];
    let mut pump = pin!(pump(&mut output, &mut markers, &control.output));
    let mut fed = false;
    let stop = loop {
        tokio::select! {
            () = &mut feed, if !fed => fed = true,
            ended = &mut pump => break match ended {
                Ok(Some(End { exit_code, held })) => Stop::Ended { exit_code, escaped: held },
                Ok(None) if control.output.is_limit_reached() => Stop::OutputLimit,
                Ok(None) => Stop::Vanished,
                Err(error) => Stop::Broken(error),
            },
            () = &mut deadline => break Stop::Timeout,
            () = control.cancel.cancelled() => break Stop::Cancelled,
            () = control.output.limit_reached() => break Stop::OutputLimit,
        }
    };
    Supervised {
        stop,
        wall_time: started.elapsed(),
    }
}

/// Writes `parts` in order, then closes stdin so the job sees end of file. A write error means
/// the job exited or closed stdin: its business, not an error.
async fn feed(mut stdin: Pin<Box<dyn AsyncWrite + Send>>, parts: [&[u8]; 3]) {
    for bytes in parts {
        if !bytes.is_empty() && stdin.write_all(bytes).await.is_err() {
            return;
        }
    }
    let _ = stdin.shutdown().await;
}

/// Copies the job's output into the sink until both end markers (the end), the end of the
/// stream (`None`: the container died), or the output limit (`None`).
async fn pump(
    output: &mut Pin<Box<dyn Stream<Item = Result<LogOutput, ApiError>> + Send>>,
    markers: &mut [Marker; 2],
    sink: &OutputSink,
) -> Result<Option<End>, ApiError> {
    let mut lag = None;
    loop {
        let frame = match lag {
            None => output.next().await,
            Some(until) => match tokio::time::timeout_at(until, output.next()).await {
                Ok(frame) => frame,
                // The first marker arrived and the container is going: its end stands.
                Err(_) => return Ok(markers.iter().find_map(Marker::end)),
            },
        };
        let Some(frame) = frame else {
            // No marker: flush what was held back, as output; a single marker still counts.
            for (marker, stream) in markers
                .iter_mut()
                .zip([OutputStream::Stdout, OutputStream::Stderr])
            {
                let _ = sink.write(stream, &marker.finish());
            }
            return Ok(markers.iter().find_map(Marker::end));
        };
        let (index, stream, bytes) = match frame? {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (0, OutputStream::Stdout, message)
            }
            LogOutput::StdErr { message } => (1, OutputStream::Stderr, message),
            LogOutput::StdIn { .. } => continue,
        };
        let passed = markers[index].feed(&bytes);
        if !passed.is_empty() && sink.write(stream, &passed) == Flow::LimitReached {
            return Ok(None);
        }
        match (markers[0].end(), markers[1].end()) {
            (Some(end), Some(_)) => return Ok(Some(end)),
            (Some(_), None) | (None, Some(_)) if lag.is_none() => {
                lag = Some(tokio::time::Instant::now() + MARKER_LAG);
            }
            _ => {}
        }
    }
}
