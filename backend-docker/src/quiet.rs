//! Keeping the daemon's background work out of the jobs' way: [`Busy`] counts the jobs running
//! on the backend and says when none has been for a moment; the [`Reaper`] removes used
//! sandboxes then, instead of while the next job runs.
//!
//! A used sandbox is only deferred when its job ended cleanly: the runner has killed whatever
//! the job left (see [`super::runner`]), so the container idles with nothing of the job in it.
//! It still goes within [`MAX_AGE`], or at once when [`MAX_BACKLOG`] wait, so a backend that
//! never goes quiet removes as many as it uses, and at most [`PARALLEL`] at a time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::connect::Connection;
use super::sandbox::{Live, destroy};

/// How long no job must have run for the backend to count as quiet: long enough for the reply
/// of the last one to be published and the next job of a sequence to arrive.
const SETTLE: Duration = Duration::from_millis(5);
/// Longest a used sandbox waits for a quiet moment before it is removed anyway.
const MAX_AGE: Duration = Duration::from_secs(2);
/// Used sandboxes waiting beyond which they are removed without waiting, and without the
/// limit of [`PARALLEL`].
const MAX_BACKLOG: usize = 4;
/// Most removals at once while the backlog is short.
const PARALLEL: usize = 2;

/// The jobs running on one backend.
#[derive(Debug)]
pub(super) struct Busy(watch::Sender<usize>);

impl Default for Busy {
    fn default() -> Self {
        Self(watch::Sender::new(0))
    }
}

/// One running job; dropping it ends it.
#[derive(Debug)]
pub(super) struct Running<'a>(&'a Busy);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.0.send_modify(|running| *running -= 1);
    }
}

impl Busy {
    /// Counts a job as running until the guard is dropped.
    pub fn enter(&self) -> Running<'_> {
        self.0.send_modify(|running| *running += 1);
        Running(self)
    }

    /// Whether a job is running now.
    pub fn is_busy(&self) -> bool {
        *self.0.borrow() > 0
    }

    /// Returns once no job has run for [`SETTLE`].
    pub async fn quiet(&self) {
        let mut running = self.0.subscribe();
        loop {
            // The sender lives as long as `self`: this cannot fail.
            let _ = running.wait_for(|running| *running == 0).await;
            tokio::time::sleep(SETTLE).await;
            if *running.borrow_and_update() == 0 {
                return;
            }
        }
    }
}

/// Used sandboxes waiting to be removed, oldest first.
#[derive(Debug, Default)]
pub(super) struct Reaper {
    queue: Mutex<VecDeque<(String, Instant)>>,
    pushed: Notify,
}

impl Reaper {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, Instant)>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues container `id` for removal at the next quiet moment.
    pub fn push(&self, id: &str) {
        self.queue().push_back((id.to_string(), Instant::now()));
        self.pushed.notify_one();
    }

    /// Removes the queued sandboxes, each when `busy` is quiet, when it is [`MAX_AGE`] old or
    /// when [`MAX_BACKLOG`] wait, until `stop` (the backend's drop removes what is left).
    pub async fn run(
        self: Arc<Self>,
        conn: Arc<Connection>,
        live: Live,
        busy: Arc<Busy>,
        stop: CancellationToken,
    ) {
        let mut removing = JoinSet::new();
        loop {
            let state = {
                let queue = self.queue();
                queue.front().map(|(_, queued)| (queue.len(), *queued))
            };
            let due = match state {
                None => None,
                Some((waiting, _)) if waiting >= MAX_BACKLOG => Some(true),
                Some((_, queued)) => Some(queued.elapsed() >= MAX_AGE),
            };
            // Beyond the backlog, removals are not limited: the queue stays bounded.
            let ready = removing.len() < PARALLEL
                || state.is_some_and(|(waiting, _)| waiting >= MAX_BACKLOG);
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                Some(_) = removing.join_next(), if !removing.is_empty() => continue,
                () = std::future::ready(()), if ready && due == Some(true) => {}
                () = busy.quiet(), if ready && due == Some(false) => {}
                () = tokio::time::sleep_until(
                    state.map_or_else(Instant::now, |(_, queued)| queued + MAX_AGE).into()
                ), if ready && due == Some(false) => {}
                () = self.pushed.notified() => continue,
            }
            if let Some((id, _)) = self.queue().pop_front() {
                let (conn, live) = (Arc::clone(&conn), live.clone());
                removing.spawn(async move { destroy(&conn, &live, &id).await });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn quiet_waits_for_the_last_job_and_a_settled_moment() {
        let busy = Busy::default();
        let first = busy.enter();
        let second = busy.enter();
        assert!(busy.is_busy());
        let started = tokio::time::Instant::now();
        let quiet = busy.quiet();
        tokio::pin!(quiet);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut quiet)
                .await
                .is_err(),
            "quiet while two jobs run"
        );
        drop(first);
        drop(second);
        quiet.await;
        assert!(!busy.is_busy());
        assert!(started.elapsed() >= Duration::from_millis(50) + SETTLE);
    }
}
