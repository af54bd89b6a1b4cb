//! Bounded concurrency: a pool runs at most `slots` jobs at once.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A pool's job slots. Cloning shares them.
#[derive(Debug, Clone)]
pub struct Slots {
    semaphore: Arc<Semaphore>,
    total: usize,
}

/// One slot, held while a job runs.
#[derive(Debug)]
pub struct SlotPermit {
    _permit: OwnedSemaphorePermit,
}

impl Slots {
    /// `total` slots (at least one).
    pub fn new(total: usize) -> Self {
        let total = total.max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Waits for a free slot.
    pub async fn acquire(&self) -> SlotPermit {
        let permit = Arc::clone(&self.semaphore)
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the slot semaphore is never closed"));
        SlotPermit { _permit: permit }
    }

    /// A free slot, if one is free now.
    pub fn try_acquire(&self) -> Option<SlotPermit> {
        Arc::clone(&self.semaphore)
            .try_acquire_owned()
            .ok()
            .map(|permit| SlotPermit { _permit: permit })
    }

    /// Slots in all.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// Slots in use now.
    pub fn in_use(&self) -> usize {
        self.total - self.available()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounds_concurrency() {
        let slots = Slots::new(2);
        let first = slots.acquire().await;
        let _second = slots.try_acquire().unwrap();
        assert!(slots.try_acquire().is_none());
        assert_eq!(slots.in_use(), 2);
        drop(first);
        assert_eq!(slots.available(), 1);
        assert_eq!(Slots::new(0).total(), 1);
    }
}
