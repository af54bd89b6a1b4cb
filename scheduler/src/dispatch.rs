//! Which waiting job gets the next free slot of a pool.
//!
//! A job waits for a slot with its tenant and priority. When a slot frees, tenants take
//! turns: it goes to the tenant running the fewest jobs, among equals to the one whose best
//! waiting job has the highest priority, then to the tenant served least recently; within
//! the tenant, to its highest-priority job, then the one that came first. Priority therefore
//! orders a tenant's own jobs and breaks ties between tenants, but cannot take turns from
//! other tenants. A tenant at its [`TenantQuotas`] limit is passed over until one of its jobs
//! ends, so a tenant with a deep queue cannot starve the others.
//!
//! Choosing costs a pass over the tenants that have waiting jobs, not over the jobs.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::quota::TenantQuotas;

/// A pool's slots, handed out fairly. Cloning shares them.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    shared: Arc<Shared>,
}

/// One slot, held by a job of one tenant while it runs; dropping it hands the slot on.
#[derive(Debug)]
pub struct DispatchPermit {
    shared: Arc<Shared>,
    tenant: Arc<str>,
}

/// Why [`Dispatcher::try_acquire`] gave no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    /// The tenant runs as many jobs as its quota allows.
    AtQuota,
    /// Every slot is taken.
    Busy,
}

#[derive(Debug)]
struct Shared {
    total: usize,
    quotas: TenantQuotas,
    state: Mutex<State>,
}

/// Order of a tenant's waiting jobs: highest priority, then first come.
type JobKey = (Reverse<i32>, u64);

#[derive(Debug, Default)]
struct State {
    free: usize,
    tenants: HashMap<Arc<str>, Tenant>,
    waiting: usize,
    arrivals: u64,
    dispatches: u64,
}

/// A tenant with running or waiting jobs.
#[derive(Debug, Default)]
struct Tenant {
    running: usize,
    /// When it last got a slot (a dispatch count; 0: not yet).
    served: u64,
    waiting: BTreeMap<JobKey, oneshot::Sender<()>>,
}

impl Dispatcher {
    /// `total` slots (at least one) shared under `quotas`.
    pub fn new(total: usize, quotas: TenantQuotas) -> Self {
        let total = total.max(1);
        Self {
            shared: Arc::new(Shared {
                total,
                quotas,
                state: Mutex::new(State {
                    free: total,
                    ..State::default()
                }),
            }),
        }
    }

    /// Waits until a job of `tenant` with `priority` is chosen for a slot. Dropping the
    /// future gives up its place (and the slot, if it was just chosen).
    pub async fn acquire(&self, tenant: &str, priority: i32) -> DispatchPermit {
        let (wake, woken) = oneshot::channel();
        let (tenant, key) = {
            let mut state = self.shared.lock();
            state.arrivals += 1;
            let key = (Reverse(priority), state.arrivals);
            let tenant = state.tenant_name(tenant);
            if let Some(entry) = state.tenants.get_mut(&tenant) {
                entry.waiting.insert(key, wake);
            }
            state.waiting += 1;
            self.shared.dispatch(&mut state);
            (tenant, key)
        };
        let mut place = Place {
            shared: &self.shared,
            tenant: Arc::clone(&tenant),
            key,
            woken: Some(woken),
        };
        if let Some(woken) = place.woken.as_mut() {
            // The sender stays queued until it is used; only `Place` removes it unused.
            let _ = woken.await;
        }
        place.woken = None;
        DispatchPermit {
            shared: Arc::clone(&self.shared),
            tenant,
        }
    }

    /// A slot for a job of `tenant` now, if one is free and the tenant is under its quota.
    /// Jobs already waiting are not passed: any free slot is one none of them may take.
    pub fn try_acquire(&self, tenant: &str) -> Result<DispatchPermit, NoSlot> {
        let mut state = self.shared.lock();
        let running = state.tenants.get(tenant).map_or(0, |entry| entry.running);
        if !self.shared.quotas.allows(tenant, running) {
            return Err(NoSlot::AtQuota);
        }
        if state.free == 0 {
            return Err(NoSlot::Busy);
        }
        let tenant = state.tenant_name(tenant);
        state.start(&tenant);
        Ok(DispatchPermit {
            shared: Arc::clone(&self.shared),
            tenant,
        })
    }

    /// Slots in all.
    pub fn total(&self) -> usize {
        self.shared.total
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.shared.lock().free
    }

    /// Slots in use now.
    pub fn in_use(&self) -> usize {
        self.total() - self.available()
    }

    /// Jobs waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.shared.lock().waiting
    }
}

impl State {
    /// The shared name of `tenant`, with an entry for it.
    fn tenant_name(&mut self, tenant: &str) -> Arc<str> {
        if let Some((name, _)) = self.tenants.get_key_value(tenant) {
            return Arc::clone(name);
        }
        let name: Arc<str> = Arc::from(tenant);
        self.tenants.insert(Arc::clone(&name), Tenant::default());
        name
    }

    /// Gives `tenant` a free slot.
    fn start(&mut self, tenant: &str) {
        self.free -= 1;
        self.dispatches += 1;
        let dispatches = self.dispatches;
        if let Some(entry) = self.tenants.get_mut(tenant) {
            entry.running += 1;
            entry.served = dispatches;
        }
    }

    /// Forgets `tenant` once it has nothing running or waiting.
    fn forget_if_idle(&mut self, tenant: &str) {
        if self
            .tenants
            .get(tenant)
            .is_some_and(|entry| entry.running == 0 && entry.waiting.is_empty())
        {
            self.tenants.remove(tenant);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock, so it is never poisoned; recover anyway.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands free slots to the best eligible waiting jobs.
    fn dispatch(&self, state: &mut State) {
        while state.free > 0 {
            let Some(tenant) = self.next_tenant(state) else {
                return;
            };
            let Some(wake) = state
                .tenants
                .get_mut(&tenant)
                .and_then(|entry| entry.waiting.pop_first())
                .map(|(_, wake)| wake)
            else {
                return;
            };
            state.waiting -= 1;
            state.start(&tenant);
            // A waiting job's receiver outlives its entry (see `Place`), so this cannot fail.
            let _ = wake.send(());
        }
    }

    /// The tenant whose job runs next: fewest running, best waiting priority, served least
    /// recently; tenants at their quota are passed over.
    fn next_tenant(&self, state: &State) -> Option<Arc<str>> {
        state
            .tenants
            .iter()
            .filter(|(name, entry)| self.quotas.allows(name, entry.running))
            .filter_map(|(name, entry)| {
                let (&(priority, _), _) = entry.waiting.first_key_value()?;
                Some(((entry.running, priority, entry.served), name))
            })
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, name)| Arc::clone(name))
    }

    fn release(&self, tenant: &str) {
        let mut state = self.lock();
        state.free += 1;
        if let Some(entry) = state.tenants.get_mut(tenant) {
            entry.running = entry.running.saturating_sub(1);
        }
        state.forget_if_idle(tenant);
        self.dispatch(&mut state);
    }
}

/// A job's place in the queue while it waits; dropped early, it leaves the queue or, if it
/// was chosen in the meantime, gives the slot back.
struct Place<'a> {
    shared: &'a Shared,
    tenant: Arc<str>,
    key: JobKey,
    woken: Option<oneshot::Receiver<()>>,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let Some(mut woken) = self.woken.take() else {
            return;
        };
        let mut state = self.shared.lock();
        let removed = state
            .tenants
            .get_mut(&self.tenant)
            .and_then(|entry| entry.waiting.remove(&self.key));
        if removed.is_some() {
            state.waiting -= 1;
            state.forget_if_idle(&self.tenant);
            return;
        }
        // Chosen under the lock before this drop: the slot and the tenant count are ours.
        if woken.try_recv().is_ok() {
            drop(state);
            self.shared.release(&self.tenant);
        }
    }
}

impl Drop for DispatchPermit {
    fn drop(&mut self) {
        self.shared.release(&self.tenant);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Starts a task that takes a slot for `tenant` and reports it on `log` once it has one.
    fn waiter(
        dispatcher: &Dispatcher,
        tenant: &'static str,
        priority: i32,
        log: &tokio::sync::mpsc::UnboundedSender<&'static str>,
    ) -> tokio::task::JoinHandle<DispatchPermit> {
        let dispatcher = dispatcher.clone();
        let log = log.clone();
        tokio::spawn(async move {
            let permit = dispatcher.acquire(tenant, priority).await;
            let _ = log.send(tenant);
            permit
        })
    }

    async fn settle(dispatcher: &Dispatcher, waiting: usize) {
        while dispatcher.waiting() != waiting {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn higher_priority_goes_first_between_equal_tenants() {
        let dispatcher = Dispatcher::new(1, TenantQuotas::default());
        let (log, mut order) = tokio::sync::mpsc::unbounded_channel();
        let held = dispatcher.acquire("x", 0).await;
        let low = waiter(&dispatcher, "low", -5, &log);
        settle(&dispatcher, 1).await;
        let high = waiter(&dispatcher, "high", 50, &log);
        settle(&dispatcher, 2).await;
        drop(held);
        drop(high.await.unwrap());
        drop(low.await.unwrap());
        assert_eq!(order.recv().await, Some("high"));
        assert_eq!(order.recv().await, Some("low"));
    }

    #[tokio::test]
    async fn priority_does_not_take_another_tenants_turn() {
        let dispatcher = Dispatcher::new(2, TenantQuotas::default());
        let (log, mut order) = tokio::sync::mpsc::unbounded_channel();
        let busy = dispatcher.acquire("pushy", 0).await;
        let held = dispatcher.acquire("x", 0).await;
        let pushy = waiter(&dispatcher, "pushy", 100, &log);
        settle(&dispatcher, 1).await;
        let modest = waiter(&dispatcher, "modest", 0, &log);
        settle(&dispatcher, 2).await;
        drop(held);
        // pushy already runs a job, modest runs none: modest's turn despite the priority.
        assert_eq!(order.recv().await, Some("modest"));
        drop((busy, modest.await.unwrap()));
        drop(pushy.await.unwrap());
    }

    #[tokio::test]
    async fn tenants_take_turns() {
        let dispatcher = Dispatcher::new(1, TenantQuotas::default());
        let (log, mut order) = tokio::sync::mpsc::unbounded_channel();
        let held = dispatcher.acquire("busy", 0).await;
        let mut tasks = Vec::new();
        for _ in 0..3 {
            tasks.push(waiter(&dispatcher, "busy", 0, &log));
            settle(&dispatcher, tasks.len()).await;
        }
        tasks.push(waiter(&dispatcher, "quiet", 0, &log));
        settle(&dispatcher, 4).await;
        drop(held);
        // Detached tasks drop their permits as they end, so the slot passes down the queue.
        drop(tasks);
        let mut seen = Vec::new();
        while seen.len() < 4 {
            seen.push(order.recv().await.unwrap());
        }
        assert_eq!(seen[0], "quiet", "{seen:?}");
    }

    #[tokio::test]
    async fn a_tenant_at_its_quota_waits_while_others_run() {
        let dispatcher = Dispatcher::new(3, TenantQuotas::uniform(1));
        let first = dispatcher.acquire("slow", 0).await;
        assert_eq!(dispatcher.try_acquire("slow").err(), Some(NoSlot::AtQuota));
        let (log, mut order) = tokio::sync::mpsc::unbounded_channel();
        let second = waiter(&dispatcher, "slow", 0, &log);
        settle(&dispatcher, 1).await;
        let other = dispatcher.try_acquire("other").expect("a free slot");
        assert_eq!(
            dispatcher.available(),
            1,
            "the slow tenant's second job must not run"
        );
        drop(first);
        let second = second.await.unwrap();
        assert_eq!(order.recv().await, Some("slow"));
        assert_eq!(dispatcher.in_use(), 2);
        let third = dispatcher.try_acquire("third").expect("the last slot");
        assert_eq!(dispatcher.try_acquire("fourth").err(), Some(NoSlot::Busy));
        drop((second, other, third));
        assert_eq!(dispatcher.available(), 3);
        assert!(dispatcher.try_acquire("slow").is_ok());
    }

    #[tokio::test]
    async fn giving_up_leaves_the_queue_and_returns_a_chosen_slot() {
        let dispatcher = Dispatcher::new(1, TenantQuotas::default());
        let held = dispatcher.acquire("a", 0).await;
        let mut given_up = Box::pin(dispatcher.acquire("b", 0));
        assert!(poll_once(given_up.as_mut()).await.is_none());
        assert_eq!(dispatcher.waiting(), 1);
        drop(held);
        // Chosen now, but dropped before it was polled again: the slot comes back.
        assert_eq!(dispatcher.available(), 0);
        drop(given_up);
        assert_eq!(dispatcher.available(), 1);
        assert_eq!(dispatcher.waiting(), 0);
        let mut waiting = Box::pin(dispatcher.acquire("c", 0));
        let _held = poll_once(waiting.as_mut())
            .await
            .expect("a free slot at once");
        let mut queued = Box::pin(dispatcher.acquire("d", 0));
        assert!(poll_once(queued.as_mut()).await.is_none());
        drop(queued);
        assert_eq!(dispatcher.waiting(), 0);
        assert!(
            !dispatcher.shared.lock().tenants.contains_key("d"),
            "d is forgotten"
        );
    }

    /// Polls `future` once: its output, or `None` if it is still pending.
    async fn poll_once<F: std::future::Future + Unpin>(mut future: F) -> Option<F::Output> {
        std::future::poll_fn(|context| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(context) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
