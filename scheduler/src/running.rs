//! The jobs running now, keyed by tenant and job id: cancellation and duplicate detection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use openshell_protocol::ErrorKind;
use tokio_util::sync::CancellationToken;

use crate::rejection::Rejection;

type Key = (String, String);

/// Registry of running jobs. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct RunningJobs {
    jobs: Arc<Mutex<HashMap<Key, CancellationToken>>>,
    shutdown: CancellationToken,
}

/// A registered job; dropping it removes the job from the registry.
#[derive(Debug)]
pub struct RunningGuard {
    key: Key,
    token: CancellationToken,
    jobs: Arc<Mutex<HashMap<Key, CancellationToken>>>,
}

impl RunningGuard {
    /// Cancelled when the job is cancelled by id or the registry shuts down.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

impl RunningJobs {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers job `id` of `tenant`; refuses a second job with the same key while the first runs.
    pub fn register(&self, tenant: &str, id: &str) -> Result<RunningGuard, Rejection> {
        let key = (tenant.to_string(), id.to_string());
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        if jobs.contains_key(&key) {
            return Err(Rejection::new(
                ErrorKind::DuplicateJob,
                format!(
                    "job `{id}` of tenant `{tenant}` is already running; wait for its result or use a new id"
                ),
            ));
        }
        let token = self.shutdown.child_token();
        jobs.insert(key.clone(), token.clone());
        Ok(RunningGuard {
            key,
            token,
            jobs: Arc::clone(&self.jobs),
        })
    }

    /// Cancels job `id` of `tenant`; false when it is not running here.
    pub fn cancel(&self, tenant: &str, id: &str) -> bool {
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        match jobs.get(&(tenant.to_string(), id.to_string())) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Cancels every running job and every job registered later.
    pub fn cancel_all(&self) {
        self.shutdown.cancel();
    }

    /// True once [`RunningJobs::cancel_all`] was called.
    pub fn is_aborted(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Number of running jobs.
    pub fn len(&self) -> usize {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when nothing runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_cancels_and_forgets() {
        let running = RunningJobs::new();
        let guard = running.register("acme", "job-1").unwrap();
        assert_eq!(
            running.register("acme", "job-1").unwrap_err().kind,
            ErrorKind::DuplicateJob
        );
        let other_tenant = running.register("other", "job-1").unwrap();
        assert_eq!(running.len(), 2);
        assert!(running.cancel("acme", "job-1"));
        assert!(guard.token().is_cancelled());
        assert!(!other_tenant.token().is_cancelled());
        drop(guard);
        assert!(!running.cancel("acme", "job-1"));
        running.cancel_all();
        assert!(other_tenant.token().is_cancelled());
    }
}
