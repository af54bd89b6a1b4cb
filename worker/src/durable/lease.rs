//! Run leases, kept in the KV bucket `OPENSHELL_LEASES`: a queued job runs only while its
//! worker holds the lease on `<tenant>.<job id>`.
//!
//! JetStream redelivers a job when it thinks its worker is gone, which it can think wrongly:
//! after a NATS server crash the consumer's in-progress acks are lost and a second worker is
//! handed jobs the first is still running. Before running a delivery, a worker creates the
//! job's key (which fails while another worker's lease is alive) and renews it with a
//! compare-and-set every third of `ack_wait` while the job runs; the key expires `ack_wait`
//! after its last renewal (the bucket's `max_age`), so a dead worker's lease frees itself, and
//! is deleted once the result is stored. A delivery that finds the lease held is put back,
//! not run. A worker that cannot renew its lease before it would expire (NATS down longer than
//! `ack_wait`), or finds it taken, stops its run: code runs twice only when the worker that
//! ran it died or lost NATS for longer than `ack_wait`.

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::kv::{self, CreateErrorKind, Store, UpdateErrorKind};
use async_nats::jetstream::stream::StorageType;
use bytes::Bytes;
use tokio::time::Instant;

use super::DurableError;

/// Name of the leases bucket.
pub const BUCKET: &str = "OPENSHELL_LEASES";

/// The leases bucket, for one worker.
#[derive(Clone)]
pub struct Leases {
    store: Store,
    ttl: Duration,
    worker_id: String,
}

/// What [`Leases::acquire`] found.
pub enum Acquired {
    /// This worker holds the lease now.
    Held(Box<Lease>),
    /// Another run holds it (its holder's worker id, when readable).
    Busy(String),
}

/// A held lease; renew it while the job runs, release it once its result is stored.
pub struct Lease {
    store: Store,
    key: String,
    worker_id: String,
    revision: u64,
    renewed: Instant,
    ttl: Duration,
}

/// Why a lease is no longer held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lost the run lease on {key} ({why}); the run is stopped so it cannot overlap another")]
pub struct LeaseLost {
    /// The job's key.
    pub key: String,
    /// What happened.
    pub why: String,
}

impl Leases {
    /// Opens the bucket (creating it when missing); leases expire `ttl` after their last renewal.
    pub async fn ensure(
        jetstream: &Context,
        ttl: Duration,
        replicas: usize,
        worker_id: &str,
    ) -> Result<Self, DurableError> {
        let store = super::attempts::open_bucket(
            jetstream,
            kv::Config {
                bucket: BUCKET.into(),
                description: "OpenShell: which worker runs each queued job".into(),
                history: 1,
                max_age: ttl,
                // On file: a lease must outlive a NATS server restart, when it matters most.
                storage: StorageType::File,
                num_replicas: replicas,
                ..kv::Config::default()
            },
        )
        .await?;
        Ok(Self {
            store,
            ttl,
            worker_id: worker_id.to_string(),
        })
    }

    /// Takes the lease on `key` unless a live run holds it.
    pub async fn acquire(&self, key: &str) -> Result<Acquired, DurableError> {
        let now = Instant::now();
        match self
            .store
            .create(key, Bytes::from(self.worker_id.clone()))
            .await
        {
            Ok(revision) => Ok(Acquired::Held(Box::new(Lease {
                store: self.store.clone(),
                key: key.to_string(),
                worker_id: self.worker_id.clone(),
                revision,
                renewed: now,
                ttl: self.ttl,
            }))),
            Err(error) if error.kind() == CreateErrorKind::AlreadyExists => {
                let holder = self.store.get(key).await.ok().flatten().map_or_else(
                    || "unknown".to_string(),
                    |value| String::from_utf8_lossy(&value).into_owned(),
                );
                Ok(Acquired::Busy(holder))
            }
            Err(error) => Err(DurableError::Lease {
                key: key.to_string(),
                source: error.into(),
            }),
        }
    }
}

impl Leases {
    /// Whether a live run holds the lease on `key` (an unreadable bucket counts as held, so
    /// that a caller that would act only on an unleased job does nothing).
    pub async fn held(&self, key: &str) -> bool {
        !matches!(self.store.get(key).await, Ok(None))
    }
}

impl Lease {
    /// Renews the lease. A failure that leaves time before it expires is only logged; one
    /// that does not, or a lease taken by another run, is [`LeaseLost`].
    pub async fn renew(&mut self) -> Result<(), LeaseLost> {
        let value = Bytes::from(self.worker_id.clone());
        match self.store.update(&self.key, value, self.revision).await {
            Ok(revision) => {
                self.revision = revision;
                self.renewed = Instant::now();
                Ok(())
            }
            Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => Err(LeaseLost {
                key: self.key.clone(),
                why: "another run took it after it expired".into(),
            }),
            // Keep a margin of a third of the lifetime for the job to be stopped in.
            Err(error) if self.renewed.elapsed() >= self.ttl.mul_f64(2.0 / 3.0) => Err(LeaseLost {
                key: self.key.clone(),
                why: format!("not renewed for {:?}: {error}", self.renewed.elapsed()),
            }),
            Err(error) => {
                tracing::warn!(%error, key = %self.key, "could not renew the run lease; retrying");
                Ok(())
            }
        }
    }

    /// Gives the lease up (only if it is still this run's).
    pub async fn release(self) {
        if let Err(error) = self
            .store
            .delete_expect_revision(&self.key, Some(self.revision))
            .await
        {
            tracing::debug!(%error, key = %self.key, "run lease not released; it expires by itself");
        }
    }
}
