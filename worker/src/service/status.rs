//! What a worker tells about itself on the NATS micro service API: the `$SRV.INFO` metadata
//! and the `$SRV.STATS` data, read back by `openshell workers`.

use openshell_protocol::Limits;
use openshell_scheduler::Dispatcher;
use serde::{Deserialize, Serialize};

use crate::metrics::health::Health;

/// Metadata key of the worker id in `$SRV.INFO`.
pub const META_WORKER_ID: &str = "worker_id";
/// Metadata key of the pools (comma-separated) in `$SRV.INFO`.
pub const META_POOLS: &str = "pools";
/// Metadata key of the backends (comma-separated, one per pool) in `$SRV.INFO`.
pub const META_BACKENDS: &str = "backends";

/// A worker's live state: the `data` of its `$SRV.STATS` endpoint, and its status endpoint's reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Worker id (as in results and audit events).
    pub worker_id: String,
    /// `openshell` version.
    pub version: String,
    /// Connected to NATS and at least one backend healthy.
    pub ready: bool,
    /// Each pool.
    pub pools: Vec<PoolStatus>,
}

/// One pool of a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Pool name.
    pub name: String,
    /// Backend kind.
    pub backend: String,
    /// Whether its backend passed the last health check.
    pub healthy: bool,
    /// Jobs it runs at once.
    pub slots: usize,
    /// Jobs running now.
    pub in_flight: usize,
    /// Highest limits a request may ask for.
    pub ceilings: Limits,
}

/// What a pool contributes to its worker's status.
#[derive(Clone)]
pub struct PoolHandle {
    /// Pool name.
    pub name: String,
    /// Backend kind.
    pub backend: String,
    /// Its slots, read for the load.
    pub slots: Dispatcher,
    /// Highest limits a request may ask for.
    pub ceilings: Limits,
}

/// Builds a [`WorkerStatus`] on demand from the live pools and health.
#[derive(Clone)]
pub struct StatusSource {
    /// Worker id.
    pub worker_id: String,
    /// The pools.
    pub pools: Vec<PoolHandle>,
    /// Backend and NATS health.
    pub health: Health,
}

impl StatusSource {
    /// The worker's state now.
    pub fn snapshot(&self) -> WorkerStatus {
        let health = self.health.pools();
        let pools = self
            .pools
            .iter()
            .map(|pool| PoolStatus {
                name: pool.name.clone(),
                backend: pool.backend.clone(),
                healthy: health
                    .iter()
                    .any(|checked| checked.pool == pool.name && checked.healthy),
                slots: pool.slots.total(),
                in_flight: pool.slots.in_use(),
                ceilings: pool.ceilings.clone(),
            })
            .collect();
        WorkerStatus {
            worker_id: self.worker_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ready: self.health.ready(),
            pools,
        }
    }
}
