//! The warm pool: started sandboxes waiting for a job, per [`Shape`] (a deadpool of them
//! each). A job takes one out for good; a background task per shape makes replacements, several
//! at once, as many as the pool's demand calls for (see [`super::demand`]): from the configured
//! floor (`warm_pool`) up to the pool's slots, after the arrival rate and the refill time.
//!
//! Warm containers are created with the pool's default limits. What Docker fixes at creation
//! (image, tmpfs size, network) is the pool's key; memory, CPU and pids limits are changed
//! per job with the container update API when a job's differ (see [`super::spec::fit`]).
//!
//! While jobs run and more than [`LOW_WATER`] sandboxes are ready, refilling waits for a quiet
//! moment (no job running, see [`super::quiet`]): the daemon's container starts then do not
//! compete with the jobs for the CPU.
//!
//! A job that finds its pool empty while replacements are being made waits for the next one
//! (one waiter per sandbox in the making, at most twice the average refill time) rather than
//! starting a cold container of its own: that one is further along, and another creation would
//! only slow the daemon's others down. It counts as a miss: it did not find one ready.
//!
//! Every change is reported on the pool's `openshell_warm_pool_*` series: the target size, the
//! sandboxes ready now (summed over shapes), and each job that took a warm one or had to start
//! a cold one (the hit rate).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use deadpool::unmanaged::Pool;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::demand::Demand;
use super::sandbox::{Factory, Sandbox};
use super::spec::{Resources, Shape};
use openshell_backend::{BackendError, BackendEvent, BackendMetrics};

/// Longest wait between two refill attempts while the daemon or image is missing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First wait after a failed refill.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Most sandboxes of one shape made at once: more only queue up in the daemon.
const MAX_PARALLEL: usize = 4;
/// Sandboxes ready at or below which refilling goes on while jobs run; above it, it waits for a
/// moment no job runs, so that creating containers does not slow the jobs down.
const LOW_WATER: usize = 1;
/// Bounds of a job's wait for a sandbox in the making (twice the average refill time).
const WAIT_BOUNDS: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(10));

/// Warm sandboxes of one shape.
#[derive(Debug)]
struct Warm {
    shape: Shape,
    resources: Resources,
    demand: Mutex<Demand>,
    idle: Pool<Sandbox>,
    wake: Notify,
    /// Sandboxes being made now.
    making: AtomicUsize,
    /// Jobs waiting for one of them.
    waiting: AtomicUsize,
}

impl Warm {
    fn demand(&self) -> std::sync::MutexGuard<'_, Demand> {
        self.demand.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn target(&self) -> usize {
        self.demand().target(Instant::now())
    }
}

/// A warm sandbox a job took.
#[derive(Debug)]
pub(super) enum Taken {
    /// It was ready.
    Ready(Sandbox),
    /// The job waited for it to be made.
    Waited(Sandbox),
}

/// Every warm pool of one backend instance.
#[derive(Debug)]
pub(super) struct WarmPools {
    /// The metrics of the OpenShell pool they belong to.
    metrics: BackendMetrics,
    pools: HashMap<Shape, Arc<Warm>>,
}

impl WarmPools {
    /// Pools for each of `shapes` of the OpenShell pool `metrics` are about, keeping at least
    /// `floor` sandboxes ready and at most `slots`; empty when `floor` is 0.
    pub fn new(
        metrics: BackendMetrics,
        shapes: impl IntoIterator<Item = (Shape, Resources)>,
        floor: usize,
        slots: usize,
    ) -> Self {
        if floor == 0 {
            return Self {
                metrics,
                pools: HashMap::new(),
            };
        }
        let pools = shapes
            .into_iter()
            .map(|(shape, resources)| {
                let demand = Demand::new(floor, slots);
                let warm = Warm {
                    shape: shape.clone(),
                    resources,
                    idle: Pool::new(demand.ceiling()),
                    demand: Mutex::new(demand),
                    wake: Notify::new(),
                    making: AtomicUsize::new(0),
                    waiting: AtomicUsize::new(0),
                };
                (shape, Arc::new(warm))
            })
            .collect();
        Self { metrics, pools }
    }

    /// A warm sandbox of `shape`: one ready, or else one in the making that no other job
    /// waits for (bounded wait); its replacement is started in the background.
    pub async fn take(&self, shape: &Shape) -> Option<Taken> {
        let warm = self.pools.get(shape)?;
        let wait = {
            let mut demand = warm.demand();
            demand.arrived(Instant::now());
            (demand.refill_time() * 2).clamp(WAIT_BOUNDS.0, WAIT_BOUNDS.1)
        };
        let taken = match warm.idle.try_remove() {
            Ok(sandbox) => Some(Taken::Ready(sandbox)),
            Err(_) => {
                warm.wake.notify_one();
                let waiting = warm.waiting.fetch_add(1, Ordering::AcqRel);
                let made = if waiting < warm.making.load(Ordering::Acquire) {
                    tokio::time::timeout(wait, warm.idle.remove()).await.ok()
                } else {
                    None
                };
                warm.waiting.fetch_sub(1, Ordering::AcqRel);
                made.and_then(Result::ok).map(Taken::Waited)
            }
        };
        warm.wake.notify_one();
        self.report();
        taken
    }

    /// Puts back a sandbox no job has used; gives it back when the pool is full or closed.
    pub fn put_back(&self, sandbox: Sandbox) -> Option<Sandbox> {
        let refused = match self.pools.get(&sandbox.shape) {
            Some(warm) => warm.idle.try_add(sandbox).err().map(|(sandbox, _)| sandbox),
            None => Some(sandbox),
        };
        self.report();
        refused
    }

    /// Counts a job that took a warm sandbox.
    pub fn hit(&self) {
        self.metrics.record(BackendEvent::WarmPoolHit);
    }

    /// Counts a job that starts a cold sandbox because no warm one fit.
    pub fn missed(&self) {
        self.metrics.record(BackendEvent::WarmPoolMissed);
    }

    /// Sets the warm-pool gauges: the target and the sandboxes ready now, over every shape.
    fn report(&self) {
        let target = self.pools.values().map(|warm| warm.target()).sum();
        let ready = self
            .pools
            .values()
            .map(|warm| warm.idle.status().available)
            .sum();
        self.metrics
            .record(BackendEvent::WarmPool { target, ready });
    }

    /// Destroys every idle sandbox of the pool of `shape` (of all pools when `None`), and
    /// starts refilling: after a daemon restart they are dead.
    pub fn drain(&self, shape: Option<&Shape>) {
        for warm in self.pools.values() {
            if shape.is_some_and(|shape| *shape != warm.shape) {
                continue;
            }
            while let Ok(sandbox) = warm.idle.try_remove() {
                drop(sandbox);
            }
            warm.wake.notify_one();
        }
        self.report();
    }

    /// Starts one refill task per pool; they stop when `stop` is cancelled.
    pub fn spawn_refills(self: &Arc<Self>, factory: &Arc<Factory>, stop: &CancellationToken) {
        self.report();
        for warm in self.pools.values() {
            let (warm, factory, stop) = (Arc::clone(warm), Arc::clone(factory), stop.clone());
            let pools = Arc::clone(self);
            tokio::spawn(async move { refill(&warm, &factory, &stop, &pools).await });
        }
    }

    /// Closes every pool: nothing is added or taken any more, and the idle sandboxes go.
    pub fn close(&self) {
        for warm in self.pools.values() {
            warm.idle.close();
        }
    }
}

/// Keeps `warm` (one of `pools`) at its target until `stop`, making up to [`MAX_PARALLEL`]
/// sandboxes at once, backing off while they cannot be created.
async fn refill(warm: &Warm, factory: &Arc<Factory>, stop: &CancellationToken, pools: &WarmPools) {
    let mut making: JoinSet<(Result<Sandbox, BackendError>, Duration)> = JoinSet::new();
    let mut backoff = MIN_BACKOFF;
    let mut failing = false;
    loop {
        let mut postponed = false;
        while making.len() < MAX_PARALLEL
            && warm.idle.status().size + making.len() < warm.target()
            && !stop.is_cancelled()
        {
            if factory.busy.is_busy()
                && warm.idle.status().available > LOW_WATER
                && warm.waiting.load(Ordering::Acquire) == 0
            {
                postponed = true;
                break;
            }
            let (factory, shape, resources) =
                (Arc::clone(factory), warm.shape.clone(), warm.resources);
            making.spawn(async move {
                let started = Instant::now();
                let made = factory.create(&shape, &resources, None).await;
                (made, started.elapsed())
            });
        }
        warm.making.store(making.len(), Ordering::Release);
        tokio::select! {
            Some(done) = making.join_next(), if !making.is_empty() => {
                // Counted down before the sandbox is added, so a job that then finds the pool
                // empty does not wait for a sandbox no longer in the making.
                warm.making.store(making.len(), Ordering::Release);
                match done {
                    Ok((Ok(sandbox), _)) if stop.is_cancelled() => drop(sandbox),
                    Ok((Ok(sandbox), took)) => {
                        if failing {
                            tracing::info!(image = %warm.shape.image, "warm pool refilling again");
                        }
                        (backoff, failing) = (MIN_BACKOFF, false);
                        warm.demand().refilled(took);
                        // A full or closed pool gives it back, and dropping it removes it.
                        let _ = warm.idle.try_add(sandbox);
                        pools.report();
                    }
                    Ok((Err(error), _)) => {
                        if !failing {
                            tracing::warn!(image = %warm.shape.image, "warm pool cannot start sandboxes: {error}; retrying");
                        }
                        failing = true;
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = stop.cancelled() => return,
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    // A creation task that panicked or was aborted: its sandbox (if any) was
                    // dropped, which removes it; the loop makes another.
                    Err(error) => tracing::warn!(image = %warm.shape.image, "a warm sandbox's creation failed: {error}"),
                }
            }
            () = warm.wake.notified() => {}
            () = factory.busy.quiet(), if postponed => {}
            () = stop.cancelled() => return,
        }
    }
}
