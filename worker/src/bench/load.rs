//! Driving operations: closed loop (fixed concurrency) or open loop (fixed arrival rate).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::stats::Recorder;

/// How operations arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Operations at once (closed loop), or the cap on in-flight operations (open loop).
    pub concurrency: usize,
    /// Arrivals per second (open loop); latency then counts from the scheduled arrival, so
    /// queueing shows.
    pub rate: Option<f64>,
}

/// Runs up to `count` operations (or until `until`), numbering them from `first`; counts
/// completions into `done` for progress.
pub async fn run<F, Fut>(
    op: F,
    first: u64,
    count: u64,
    until: Option<Instant>,
    shape: Shape,
    done: Arc<AtomicU64>,
) -> Recorder
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<(Duration, String)>> + Send + 'static,
{
    let started = Instant::now();
    let mut recorder = match shape.rate {
        None => closed(op, first, count, until, shape.concurrency, done).await,
        Some(rate) => open(op, first, count, until, rate, shape.concurrency, done).await,
    };
    recorder.add_busy(started.elapsed());
    recorder
}

async fn closed<F, Fut>(
    op: F,
    first: u64,
    count: u64,
    until: Option<Instant>,
    concurrency: usize,
    done: Arc<AtomicU64>,
) -> Recorder
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<(Duration, String)>> + Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (op, next, done) = (op.clone(), Arc::clone(&next), Arc::clone(&done));
        tasks.spawn(async move {
            let mut recorder = Recorder::default();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count || until.is_some_and(|until| Instant::now() >= until) {
                    break recorder;
                }
                match op(first + index).await {
                    Ok((latency, verdict)) => recorder.record(latency, &verdict),
                    Err(error) => recorder.error(format_args!("{error:#}")),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    collect(tasks).await
}

async fn open<F, Fut>(
    op: F,
    first: u64,
    count: u64,
    until: Option<Instant>,
    rate: f64,
    cap: usize,
    done: Arc<AtomicU64>,
) -> Recorder
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<(Duration, String)>> + Send + 'static,
{
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = JoinSet::new();
    let mut dropped = Recorder::default();
    for index in 0..count {
        let scheduled = ticker.tick().await;
        if until.is_some_and(|until| Instant::now() >= until) {
            break;
        }
        if tasks.len() >= cap.max(1) * 64 {
            // Far more in flight than the system can hold: count it as an error, not a hang.
            dropped.error(format_args!(
                "not sent: more than {} operations in flight; lower --rate",
                cap.max(1) * 64
            ));
            continue;
        }
        let (op, done) = (op.clone(), Arc::clone(&done));
        tasks.spawn(async move {
            let mut recorder = Recorder::default();
            match op(first + index).await {
                Ok((_, verdict)) => recorder.record(scheduled.elapsed(), &verdict),
                Err(error) => recorder.error(format_args!("{error:#}")),
            }
            done.fetch_add(1, Ordering::Relaxed);
            recorder
        });
    }
    let mut recorder = collect(tasks).await;
    recorder.merge(dropped);
    recorder
}

async fn collect(mut tasks: JoinSet<Recorder>) -> Recorder {
    let mut total = Recorder::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(recorder) => total.merge(recorder),
            Err(error) => total.error(format_args!("an operation task failed: {error}")),
        }
    }
    total
}
