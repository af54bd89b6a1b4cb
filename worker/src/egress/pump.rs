//! Moving bytes between the job and a destination, counted against the job's byte cap.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The bytes a job moved, against its cap.
#[derive(Debug, Default)]
pub struct Meter {
    moved: AtomicU64,
    max: Option<u64>,
    over: AtomicBool,
}

impl Meter {
    /// A meter allowing `max` bytes (none: unlimited).
    pub fn new(max: Option<u64>) -> Self {
        Self {
            max,
            ..Self::default()
        }
    }

    /// Counts `bytes`; false (and over from now on) when they pass the cap.
    pub fn take(&self, bytes: u64) -> bool {
        let total = self.moved.fetch_add(bytes, Ordering::SeqCst) + bytes;
        if self.max.is_some_and(|max| total > max) {
            self.over.store(true, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Bytes counted so far (including the ones that passed the cap).
    pub fn moved(&self) -> u64 {
        self.moved.load(Ordering::SeqCst)
    }

    /// True once the cap was passed.
    pub fn over(&self) -> bool {
        self.over.load(Ordering::SeqCst)
    }
}

/// What the first bytes of a direction must pass: `Some(reason)` refuses them.
pub type FirstCheck<'a> = &'a (dyn Fn(&[u8]) -> Option<String> + Sync);

/// Copies `from` to `to` until end of stream, an error, `stop`, the cap, or `first` refusing
/// the first bytes read; then shuts `to` down for writing and cancels `stop` (the other
/// direction ends too). Returns the bytes delivered, and `first`'s refusal. Passing the cap
/// cancels `cut`, which ends every connection of the job.
pub async fn pump<R, W>(
    mut from: R,
    mut to: W,
    meter: &Meter,
    (stop, cut): (&CancellationToken, &CancellationToken),
    mut first: Option<FirstCheck<'_>>,
) -> (u64, Option<String>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; 16 * 1024];
    let mut delivered = 0u64;
    let mut refused = None;
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            },
            () = stop.cancelled() => break,
        };
        if let Some(reason) = first.take().and_then(|check| check(&buffer[..read])) {
            refused = Some(reason);
            stop.cancel();
            break;
        }
        if !meter.take(read as u64) {
            cut.cancel();
            break;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
        delivered += read as u64;
    }
    let _ = to.shutdown().await;
    (delivered, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_passes_its_cap_once_and_stays_over() {
        let meter = Meter::new(Some(10));
        assert!(meter.take(6) && meter.take(4));
        assert!(!meter.over());
        assert!(!meter.take(1));
        assert!(meter.over() && meter.moved() == 11);
        assert!(Meter::new(None).take(u64::MAX / 2));
    }

    #[tokio::test]
    async fn a_pump_stops_at_the_cap_and_cuts_the_job() {
        let meter = Meter::new(Some(4));
        let (stop, cut) = (CancellationToken::new(), CancellationToken::new());
        let mut sink = Vec::new();
        let moved = pump(&b"0123456789"[..], &mut sink, &meter, (&stop, &cut), None).await;
        assert_eq!(moved, (0, None));
        assert!(cut.is_cancelled() && meter.over());
        let meter = Meter::new(None);
        let stop = CancellationToken::new();
        let moved = pump(&b"0123456789"[..], &mut sink, &meter, (&stop, &cut), None).await;
        assert_eq!((moved.0, sink.as_slice()), (10, &b"0123456789"[..]));
        let refuse = |_: &[u8]| Some("no".to_string());
        let moved = pump(&b"abc"[..], &mut sink, &meter, (&stop, &cut), Some(&refuse)).await;
        assert_eq!(moved, (0, Some("no".to_string())));
        assert!(stop.is_cancelled());
    }
}
