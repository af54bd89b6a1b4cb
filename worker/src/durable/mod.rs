//! Durable mode: jobs queued in JetStream, results stored by id, audit persisted first.
//!
//! Beside core request/reply, not instead of it. The flow, one file each:
//! [`streams`] (created or checked at start-up) → [`consumer`] (one pull consumer per pool,
//! pulling only free slots) → [`job`] (result already stored? tenant at its quota? another
//! run holding the job's [`lease`]? too many started runs, counted in [`attempts`]? run
//! through the shared [`crate::job::PoolRuntime`] with in-progress acks and lease renewals)
//! → [`requeue`] (did it run, or does it go back to the queue?) → [`results`] (store, ack,
//! release the lease). [`cancel`] records cancellations of queued jobs. [`subjects`] names
//! everything.
//!
//! Guarantees: a job is acked only after its result is stored, so a worker that dies mid-job
//! leaves it to be redelivered; each delivery first looks for a stored result, so a job that
//! finished is not run again, and runs only under the job's lease, so a redelivery while its
//! first run is alive (after a NATS crash) is put back instead of running the code twice; once `max_deliver` runs were started without a result, the next
//! delivery stores `worker_lost` (a job put back unrun, for a quota or an audit outage, does
//! not count). Code that
//! was running when its worker died may have had side effects and runs again on redelivery:
//! execution is at least once, the stored result exactly once.

pub mod attempts;
pub mod cancel;
pub mod client;
pub mod consumer;
mod error;
pub mod job;
pub mod lease;
pub mod requeue;
pub mod results;
pub mod streams;
pub mod subjects;

use std::sync::Arc;

use openshell_scheduler::Slots;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::{Cause, DurableError};
pub use subjects::DurableSubjects;

use crate::audit::{AuditPublisher, AuditSink};
use crate::config::DurableConfig;
use crate::job::PoolRuntime;

/// One pool served from the jobs stream.
pub struct DurablePool {
    /// The pool's runtime, its audit publisher waiting for JetStream acks.
    pub runtime: Arc<PoolRuntime>,
    /// NATS connection (its `max_payload` bounds stored results).
    pub nats: async_nats::Client,
    /// JetStream context.
    pub jetstream: async_nats::jetstream::Context,
    /// The results stream.
    pub results: async_nats::jetstream::stream::Stream,
    /// Durable subjects.
    pub subjects: DurableSubjects,
    /// Runs started per job.
    pub attempts: attempts::Attempts,
    /// Which worker runs each job.
    pub leases: lease::Leases,
    /// Durable settings.
    pub settings: DurableConfig,
}

/// Creates or checks the streams and the pool consumers, then serves every pool in `runtimes`
/// from the jobs stream until `stop` fires, publishing audit events through `audit` (acknowledged
/// by the audit stream where they must precede the code). Returns the intake tasks.
pub async fn serve(
    nats: &async_nats::Client,
    runtimes: &[Arc<PoolRuntime>],
    settings: &DurableConfig,
    audit: &AuditPublisher,
    tracker: TaskTracker,
    stop: CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, DurableError> {
    let jetstream = async_nats::jetstream::new(nats.clone());
    let Some(first) = runtimes.first() else {
        return Ok(Vec::new());
    };
    let subjects = DurableSubjects::new(first.subjects().prefix());
    if settings.replicas == 1
        && let Some(cluster) = nats.server_info().cluster.filter(|name| !name.is_empty())
    {
        tracing::warn!(
            %cluster,
            "the NATS server is clustered but durable.replicas is 1: losing the node that holds a \
             stream stops durable mode until it returns; set OPENSHELL_DURABLE_REPLICAS=3"
        );
    }
    let streams = streams::ensure(&jetstream, &subjects, settings).await?;
    let attempts = attempts::Attempts::ensure(&jetstream, settings).await?;
    let leases = lease::Leases::ensure(
        &jetstream,
        settings.ack_wait.as_duration(),
        settings.replicas,
        first.worker_id(),
    )
    .await?;
    let canceller = cancel::Canceller {
        jetstream: jetstream.clone(),
        jobs: streams.jobs.clone(),
        subjects: first.subjects().clone(),
        worker_id: first.worker_id().to_string(),
        leases: leases.clone(),
    };
    let mut intakes = vec![canceller.serve(nats, stop.clone()).await?];
    // Events that must precede the code wait for the audit stream's ack.
    let audit: Arc<dyn AuditSink> = Arc::new(audit.clone().with_jetstream(jetstream.clone()));
    for runtime in runtimes {
        let name = runtime.name();
        let wanted = consumer::config(
            name,
            subjects.pool_jobs(name),
            settings.ack_wait.as_duration(),
        );
        let pool_consumer = consumer::ensure(&streams.jobs, wanted).await?;
        let pool = Arc::new(DurablePool {
            runtime: Arc::new(runtime.with_audit(Arc::clone(&audit))),
            nats: nats.clone(),
            jetstream: jetstream.clone(),
            results: streams.results.clone(),
            attempts: attempts.clone(),
            leases: leases.clone(),
            subjects: subjects.clone(),
            settings: settings.clone(),
        });
        tracing::info!(pool = %name, consumer = %consumer::name(name), subject = %subjects.pool_jobs(name), "serving pool from JetStream");
        let gate = Slots::new(runtime.slots().total());
        intakes.push(consumer::serve(
            pool,
            pool_consumer,
            gate,
            tracker.clone(),
            stop.clone(),
        ));
    }
    Ok(intakes)
}
