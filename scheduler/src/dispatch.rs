//! Which waiting job gets the next free slot of a pool.
//!
//! A job waits for a slot with its tenant and priority. When a slot frees, it goes to the
//! waiting job with the highest priority; among equal priorities, to the tenant running the
//! fewest jobs, then to the tenant served least recently (so tenants take turns); among a
//! tenant's jobs, to the one that came first. A tenant at
//! its [`TenantQuotas`] limit is passed over until one of its jobs ends, so a tenant with a
//! deep queue cannot starve the others.

use std::collections::HashMap;
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
    tenant: String,
}

#[derive(Debug)]
struct Shared {
    total: usize,
    quotas: TenantQuotas,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    free: usize,
    running: HashMap<String, usize>,
    /// When each tenant with running or waiting jobs last got a slot (a dispatch count).
    served: HashMap<String, u64>,
    waiting: Vec<Waiter>,
    arrivals: u64,
    dispatches: u64,
}

#[derive(Debug)]
struct Waiter {
    tenant: String,
    priority: i32,
    arrival: u64,
    wake: oneshot::Sender<()>,
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
        let arrival = {
            let mut state = self.shared.lock();
            state.arrivals += 1;
            let arrival = state.arrivals;
            state.waiting.push(Waiter {
                tenant: tenant.to_string(),
                priority,
                arrival,
                wake,
            });
            self.shared.dispatch(&mut state);
            arrival
        };
        let mut place = Place {
            shared: &self.shared,
            tenant: tenant.to_string(),
            arrival,
            woken: Some(woken),
        };
        if let Some(woken) = place.woken.as_mut() {
            // The sender stays in `waiting` until it is used; only `Place` removes it unused.
            let _ = woken.await;
        }
        place.woken = None;
        DispatchPermit {
            shared: Arc::clone(&self.shared),
            tenant: std::mem::take(&mut place.tenant),
        }
    }

    /// True when `tenant` runs as many jobs as its quota allows.
    pub fn at_quota(&self, tenant: &str) -> bool {
        let state = self.shared.lock();
        let running = state.running.get(tenant).copied().unwrap_or(0);
        !self.shared.quotas.allows(tenant, running)
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
        self.shared.lock().waiting.len()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock, so it is never poisoned; recover anyway.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands free slots to the best eligible waiters.
    fn dispatch(&self, state: &mut State) {
        while state.free > 0 {
            let Some(index) = self.best(state) else {
                return;
            };
            let waiter = state.waiting.swap_remove(index);
            state.free -= 1;
            state.dispatches += 1;
            state.served.insert(waiter.tenant.clone(), state.dispatches);
            *state.running.entry(waiter.tenant).or_default() += 1;
            // A waiter's receiver outlives its entry (see `Place`), so this cannot fail.
            let _ = waiter.wake.send(());
        }
    }

    /// The waiter to run next: highest priority, then least-running tenant, then the tenant
    /// served least recently, then first come.
    fn best(&self, state: &State) -> Option<usize> {
        let running = |tenant: &str| state.running.get(tenant).copied().unwrap_or(0);
        let served = |tenant: &str| state.served.get(tenant).copied().unwrap_or(0);
        state
            .waiting
            .iter()
            .enumerate()
            .filter(|(_, waiter)| self.quotas.allows(&waiter.tenant, running(&waiter.tenant)))
            .min_by_key(|(_, waiter)| {
                (
                    std::cmp::Reverse(waiter.priority),
                    running(&waiter.tenant),
                    served(&waiter.tenant),
                    waiter.arrival,
                )
            })
            .map(|(index, _)| index)
    }

    fn release(&self, tenant: &str) {
        let mut state = self.lock();
        state.free += 1;
        if let Some(count) = state.running.get_mut(tenant) {
            *count -= 1;
            if *count == 0 {
                state.running.remove(tenant);
                if !state.waiting.iter().any(|waiter| waiter.tenant == tenant) {
                    state.served.remove(tenant);
                }
            }
        }
        self.dispatch(&mut state);
    }
}

/// A job's place in the queue while it waits; dropped early, it leaves the queue or, if it
/// was chosen in the meantime, gives the slot back.
struct Place<'a> {
    shared: &'a Shared,
    tenant: String,
    arrival: u64,
    woken: Option<oneshot::Receiver<()>>,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let Some(mut woken) = self.woken.take() else {
            return;
        };
        let mut state = self.shared.lock();
        if let Some(index) = state
            .waiting
            .iter()
            .position(|waiter| waiter.arrival == self.arrival)
        {
            state.waiting.swap_remove(index);
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

    /// Starts a task that takes a slot for `tenant` and reports its order of arrival on `log`.
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
    async fn higher_priority_goes_first() {
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
        for task in tasks {
            // Each permit is released as soon as its task ends, in dispatch order.
            drop(task);
        }
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
        assert!(dispatcher.at_quota("slow"));
        let (log, mut order) = tokio::sync::mpsc::unbounded_channel();
        let second = waiter(&dispatcher, "slow", 0, &log);
        settle(&dispatcher, 1).await;
        let other = dispatcher.acquire("other", 0).await;
        assert_eq!(
            dispatcher.available(),
            1,
            "the slow tenant's second job must not run"
        );
        drop(first);
        let second = second.await.unwrap();
        assert_eq!(order.recv().await, Some("slow"));
        assert_eq!(dispatcher.in_use(), 2);
        drop((second, other));
        assert_eq!(dispatcher.available(), 3);
        assert!(!dispatcher.at_quota("slow"));
    }

    #[tokio::test]
    async fn giving_up_leaves_the_queue_and_returns_a_chosen_slot() {
        let dispatcher = Dispatcher::new(1, TenantQuotas::default());
        let held = dispatcher.acquire("a", 0).await;
        let mut given_up = Box::pin(dispatcher.acquire("b", 0));
        assert!(futures_poll_once(given_up.as_mut()).await.is_none());
        assert_eq!(dispatcher.waiting(), 1);
        drop(held);
        // Chosen now, but dropped before it was polled again: the slot comes back.
        assert_eq!(dispatcher.available(), 0);
        drop(given_up);
        assert_eq!(dispatcher.available(), 1);
        assert_eq!(dispatcher.waiting(), 0);
        let _again = dispatcher.acquire("c", 0).await;
        assert_eq!(dispatcher.in_use(), 1);
    }

    /// Polls `future` once: its output, or `None` if it is still pending.
    async fn futures_poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(|context| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(context) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
