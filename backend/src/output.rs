//! Capturing a job's stdout and stderr under its output limit.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Which output stream bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Whether the job may keep writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Under the limit.
    Continue,
    /// The limit is reached: stop the job.
    LimitReached,
}

/// What a job wrote, as kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedOutput {
    /// Standard output, up to the limit.
    pub stdout: Vec<u8>,
    /// Standard error, up to the limit.
    pub stderr: Vec<u8>,
    /// Stdout lost bytes to the limit.
    pub stdout_truncated: bool,
    /// Stderr lost bytes to the limit.
    pub stderr_truncated: bool,
}

impl CapturedOutput {
    /// True when either stream was cut.
    pub fn truncated(&self) -> bool {
        self.stdout_truncated || self.stderr_truncated
    }
}

/// Bytes a job wrote to one stream, as kept: what a live tap receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The stream.
    pub stream: Stream,
    /// The bytes kept (never more than the output limit left room for).
    pub bytes: Vec<u8>,
}

/// What the sink's lock guards: the output kept, and the live tap while it is open.
#[derive(Debug, Default)]
struct Shared {
    captured: CapturedOutput,
    tap: Option<UnboundedSender<Written>>,
}

/// Collects stdout and stderr together up to `limit` bytes; past it, marks the stream
/// truncated and signals [`OutputSink::limit_reached`] so the backend stops the job.
/// Cloning shares the same buffers. With a tap ([`OutputSink::tapped`]), every kept write
/// is also sent on, in order, until [`OutputSink::close_tap`]: the tap gets exactly the
/// bytes the captured output holds.
#[derive(Debug, Clone)]
pub struct OutputSink {
    limit: u64,
    shared: Arc<Mutex<Shared>>,
    exceeded: CancellationToken,
}

impl OutputSink {
    /// A sink keeping at most `limit` bytes of stdout and stderr together.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            shared: Arc::default(),
            exceeded: CancellationToken::new(),
        }
    }

    /// [`OutputSink::new`], also sending every kept write to `tap` until
    /// [`OutputSink::close_tap`]. The tap holds at most the output limit.
    pub fn tapped(limit: u64, tap: UnboundedSender<Written>) -> Self {
        let sink = Self::new(limit);
        sink.lock().tap = Some(tap);
        sink
    }

    /// Stops sending writes to the tap (the worker does so when the job ended, whatever
    /// clones of the sink a backend still holds): its receiver then sees the end.
    pub fn close_tap(&self) {
        self.lock().tap = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `bytes` from `stream`, keeping what fits under the limit.
    pub fn write(&self, stream: Stream, bytes: &[u8]) -> Flow {
        let mut guard = self.lock();
        let Shared { captured, tap } = &mut *guard;
        let used = (captured.stdout.len() + captured.stderr.len()) as u64;
        let room = self.limit.saturating_sub(used) as usize;
        let kept = bytes.len().min(room);
        let (buffer, truncated) = match stream {
            Stream::Stdout => (&mut captured.stdout, &mut captured.stdout_truncated),
            Stream::Stderr => (&mut captured.stderr, &mut captured.stderr_truncated),
        };
        buffer.extend_from_slice(&bytes[..kept]);
        if kept > 0
            && let Some(sender) = tap
        {
            // Under the lock, so the tap sees writes in the order the output holds them. A
            // receiver gone (the worker stopped listening) only ends the tap.
            let written = Written {
                stream,
                bytes: bytes[..kept].to_vec(),
            };
            if sender.send(written).is_err() {
                *tap = None;
            }
        }
        if kept < bytes.len() {
            *truncated = true;
            self.exceeded.cancel();
            return Flow::LimitReached;
        }
        Flow::Continue
    }

    /// Resolves once the output limit is exceeded.
    pub fn limit_reached(&self) -> WaitForCancellationFuture<'_> {
        self.exceeded.cancelled()
    }

    /// True once the output limit was exceeded.
    pub fn is_limit_reached(&self) -> bool {
        self.exceeded.is_cancelled()
    }

    /// The output kept so far.
    pub fn snapshot(&self) -> CapturedOutput {
        self.lock().captured.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_both_streams_up_to_the_shared_limit() {
        let sink = OutputSink::new(10);
        assert_eq!(sink.write(Stream::Stdout, b"hello"), Flow::Continue);
        assert_eq!(sink.write(Stream::Stderr, b"oops"), Flow::Continue);
        assert!(!sink.is_limit_reached());
        assert_eq!(sink.write(Stream::Stdout, b"world"), Flow::LimitReached);
        let out = sink.snapshot();
        assert_eq!(out.stdout, b"hellow");
        assert_eq!(out.stderr, b"oops");
        assert!(out.stdout_truncated && !out.stderr_truncated);
        assert!(sink.is_limit_reached());
    }

    #[test]
    fn the_tap_gets_exactly_what_is_kept_in_order_until_closed() {
        let (tap, mut taken) = tokio::sync::mpsc::unbounded_channel();
        let sink = OutputSink::tapped(8, tap);
        sink.write(Stream::Stdout, b"abc");
        sink.write(Stream::Stderr, b"de");
        sink.write(Stream::Stdout, b"fghij");
        sink.close_tap();
        sink.write(Stream::Stdout, b"late");
        let mut seen = Vec::new();
        while let Ok(written) = taken.try_recv() {
            seen.push((written.stream, written.bytes));
        }
        assert_eq!(
            seen,
            [
                (Stream::Stdout, b"abc".to_vec()),
                (Stream::Stderr, b"de".to_vec()),
                (Stream::Stdout, b"fgh".to_vec()),
            ]
        );
        let kept = sink.snapshot();
        assert_eq!(
            (kept.stdout, kept.stderr),
            (b"abcfgh".to_vec(), b"de".to_vec())
        );
    }
}
