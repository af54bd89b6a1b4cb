//! Capturing a job's stdout and stderr under its output limit.

use std::sync::{Arc, Mutex, PoisonError};

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

/// Collects stdout and stderr together up to `limit` bytes; past it, marks the stream
/// truncated and signals [`OutputSink::limit_reached`] so the backend stops the job.
/// Cloning shares the same buffers.
#[derive(Debug, Clone)]
pub struct OutputSink {
    limit: u64,
    captured: Arc<Mutex<CapturedOutput>>,
    exceeded: CancellationToken,
}

impl OutputSink {
    /// A sink keeping at most `limit` bytes of stdout and stderr together.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            captured: Arc::default(),
            exceeded: CancellationToken::new(),
        }
    }

    /// Appends `bytes` from `stream`, keeping what fits under the limit.
    pub fn write(&self, stream: Stream, bytes: &[u8]) -> Flow {
        let mut guard = self.captured.lock().unwrap_or_else(PoisonError::into_inner);
        let captured = &mut *guard;
        let used = (captured.stdout.len() + captured.stderr.len()) as u64;
        let room = self.limit.saturating_sub(used) as usize;
        let kept = bytes.len().min(room);
        let (buffer, truncated) = match stream {
            Stream::Stdout => (&mut captured.stdout, &mut captured.stdout_truncated),
            Stream::Stderr => (&mut captured.stderr, &mut captured.stderr_truncated),
        };
        buffer.extend_from_slice(&bytes[..kept]);
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
        self.captured
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
}
