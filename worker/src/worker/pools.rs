//! Building one configured pool: its backend (from the [`BackendRegistry`]), its health watch
//! and canary, its [`PoolRuntime`], and what the status endpoint shows of it.

use std::sync::Arc;

use openshell_backend::{Backend, BackendMetrics, MetricsSink};
use openshell_scheduler::PoolPolicy;

use super::WorkerError;
use crate::config::PoolConfig;
use crate::job::{PoolRuntime, WorkerContext};
use crate::metrics::Metrics;
use crate::metrics::health::{Canary, Health};
use crate::registry::BackendRegistry;
use crate::service::PoolHandle;

/// Builds pool `name` from `pool`: its backend, checked (canary included) before it returns,
/// and its runtime; with the pool's entry for the status endpoint.
pub(super) async fn build(
    name: &str,
    pool: &PoolConfig,
    registry: &BackendRegistry,
    health: &Health,
    worker: &WorkerContext,
) -> Result<(Arc<PoolRuntime>, PoolHandle), WorkerError> {
    let metrics: &Arc<Metrics> = &worker.metrics;
    let sink: Arc<dyn MetricsSink> = Arc::clone(metrics) as _;
    let context = pool.context(name, BackendMetrics::new(name, sink));
    let backend = registry
        .build(pool, context)
        .await
        .map_err(|source| WorkerError::Backend {
            pool: name.to_string(),
            source,
        })?;
    metrics.pool_started(name, backend.kind(), pool.slots);
    let readiness = health
        .watch(
            name,
            Arc::clone(&backend),
            canary(&backend, pool.policy(name)),
        )
        .await;
    let runtime = PoolRuntime::new(name, pool.clone(), backend, readiness, worker);
    let handle = PoolHandle {
        name: name.to_string(),
        backend: runtime.backend().kind().to_string(),
        slots: runtime.slots().clone(),
        ceilings: pool.ceilings.clone(),
    };
    Ok((Arc::new(runtime), handle))
}

/// The pool's canary: a tiny job through `backend` under `policy`'s defaults.
fn canary(backend: &Arc<dyn Backend>, policy: PoolPolicy) -> Canary {
    let backend = Arc::clone(backend);
    Arc::new(move || {
        let (backend, policy) = (Arc::clone(&backend), policy.clone());
        Box::pin(async move {
            let capabilities = backend.capabilities();
            crate::job::canary::run(backend.as_ref(), &policy, &capabilities).await
        })
    })
}
