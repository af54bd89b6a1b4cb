//! How many requests a pool holds before they get a slot: at most `pool` in all and at most
//! `tenant` of one tenant. A request that finds no seat is refused at once (`overloaded`)
//! instead of queueing in memory, so a flood costs the flooder retries and the worker a
//! bounded amount of memory, and a tenant cannot take the seats of all the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use openshell_protocol::{ErrorInfo, ErrorKind};

/// Bounds of a pool's waiting room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitingLimits {
    /// Requests held in all.
    pub pool: usize,
    /// Requests held of one tenant.
    pub tenant: usize,
}

/// A pool's waiting room. Cloning shares it.
#[derive(Debug, Clone)]
pub struct WaitingRoom {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    limits: WaitingLimits,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    total: usize,
    tenants: HashMap<Arc<str>, usize>,
}

/// One request's place in the waiting room; dropping it frees the place.
#[derive(Debug)]
pub struct Seat {
    shared: Arc<Shared>,
    tenant: Arc<str>,
}

/// Why a request found no seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// The pool holds `limit` requests already.
    #[error(
        "the pool has {limit} requests waiting already (max_waiting); retry later, with backoff"
    )]
    Pool {
        /// The pool's bound.
        limit: usize,
    },
    /// The tenant has `limit` requests waiting already.
    #[error(
        "your tenant has {limit} requests waiting in this pool already (tenant_max_waiting); retry later, with backoff"
    )]
    Tenant {
        /// The tenant's bound.
        limit: usize,
    },
}

impl From<Full> for ErrorInfo {
    fn from(full: Full) -> Self {
        ErrorInfo::new(ErrorKind::Overloaded, full.to_string())
    }
}

impl WaitingRoom {
    /// A room with `limits` (each at least one).
    pub fn new(limits: WaitingLimits) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits: WaitingLimits {
                    pool: limits.pool.max(1),
                    tenant: limits.tenant.max(1),
                },
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// A seat for a request of `tenant`, if the pool and the tenant are under their bounds.
    pub fn try_enter(&self, tenant: &str) -> Result<Seat, Full> {
        let limits = self.shared.limits;
        let mut state = self.shared.lock();
        if state.total >= limits.pool {
            return Err(Full::Pool { limit: limits.pool });
        }
        if state.tenants.get(tenant).copied().unwrap_or(0) >= limits.tenant {
            return Err(Full::Tenant {
                limit: limits.tenant,
            });
        }
        let tenant = state
            .tenants
            .get_key_value(tenant)
            .map_or_else(|| Arc::from(tenant), |(name, _)| Arc::clone(name));
        *state.tenants.entry(Arc::clone(&tenant)).or_default() += 1;
        state.total += 1;
        Ok(Seat {
            shared: Arc::clone(&self.shared),
            tenant,
        })
    }

    /// Requests held now.
    pub fn waiting(&self) -> usize {
        self.shared.lock().total
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements, so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.total = state.total.saturating_sub(1);
        if let Some(held) = state.tenants.get_mut(&self.tenant) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                state.tenants.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_the_pool_and_each_tenant() {
        let room = WaitingRoom::new(WaitingLimits { pool: 3, tenant: 2 });
        let a1 = room.try_enter("a").expect("first seat");
        let _a2 = room.try_enter("a").expect("second seat");
        assert_eq!(room.try_enter("a").unwrap_err(), Full::Tenant { limit: 2 });
        let _b1 = room.try_enter("b").expect("another tenant still has room");
        assert_eq!(room.try_enter("c").unwrap_err(), Full::Pool { limit: 3 });
        assert_eq!(room.waiting(), 3);
        drop(a1);
        assert_eq!(room.waiting(), 2);
        let _a3 = room.try_enter("a").expect("a seat freed");
        let info = ErrorInfo::from(Full::Tenant { limit: 2 });
        assert_eq!(info.kind, ErrorKind::Overloaded);
        assert!(info.message.contains("retry later"), "{}", info.message);
    }

    #[test]
    fn a_tenant_that_leaves_is_forgotten() {
        let room = WaitingRoom::new(WaitingLimits { pool: 8, tenant: 1 });
        drop(room.try_enter("a").expect("seat"));
        assert!(room.shared.lock().tenants.is_empty());
        assert_eq!(room.waiting(), 0);
    }
}
