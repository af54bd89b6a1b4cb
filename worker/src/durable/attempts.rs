//! How many times each queued job was started, kept in the KV bucket `OPENSHELL_ATTEMPTS`.
//!
//! JetStream counts every delivery, including a job put back (nak) because its tenant was at
//! its quota or the audit stream was down. Those did not run, so they must not use up
//! `max_deliver`: a worker counts an attempt here just before it runs a job, takes it back if
//! the job then does not start, and stores `worker_lost` once `max_deliver` attempts were
//! started without a stored result. Keys are `<tenant>.<job id>` (both subject tokens); the
//! bucket keeps one revision per key, on file, for `durable.results_max_age`.

use async_nats::jetstream::Context;
use async_nats::jetstream::kv::{self, Store};
use async_nats::jetstream::stream::StorageType;
use bytes::Bytes;

use super::{Cause, DurableError};
use crate::config::DurableConfig;

/// Name of the attempts bucket.
pub const BUCKET: &str = "OPENSHELL_ATTEMPTS";
/// Compare-and-set retries when two workers count the same job at once.
const CAS_RETRIES: usize = 5;

/// The attempts bucket.
#[derive(Clone)]
pub struct Attempts {
    store: Store,
}

/// Attempts started at one key, as read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Attempts started.
    started: u32,
    /// The revision to update (0: no entry yet).
    revision: u64,
}

/// What [`Attempts::begin`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// Run it: this is attempt number `n` (1 for the first).
    Run(u32),
    /// `max_deliver` attempts were started already: store `worker_lost`.
    Exhausted(u32),
}

impl Attempts {
    /// Opens the bucket, creating it when it does not exist.
    pub async fn ensure(
        jetstream: &Context,
        settings: &DurableConfig,
    ) -> Result<Self, DurableError> {
        let store = open_bucket(
            jetstream,
            kv::Config {
                bucket: BUCKET.into(),
                description: "OpenShell: runs started per queued job".into(),
                history: 1,
                max_age: settings.results_max_age.as_duration(),
                storage: StorageType::File,
                num_replicas: settings.replicas,
                ..kv::Config::default()
            },
        )
        .await?;
        Ok(Self { store })
    }

    /// Counts one more attempt at `key`, unless `max` were started already. `read` is the
    /// count as [`Attempts::read`] found it (read alongside the lease, to save a round trip);
    /// it is read again only when another worker changed it in between.
    pub async fn begin(&self, key: &str, max: u32, read: Count) -> Result<Begin, DurableError> {
        let mut count = read;
        for retry in 0..CAS_RETRIES {
            if retry > 0 {
                count = self.read(key).await?;
            }
            if count.started >= max {
                return Ok(Begin::Exhausted(count.started));
            }
            if self.write(key, count.started + 1, count.revision).await? {
                return Ok(Begin::Run(count.started + 1));
            }
        }
        Err(self.contended(key))
    }

    /// Takes back the attempt counted by [`Attempts::begin`] for a job that did not start.
    pub async fn undo(&self, key: &str) -> Result<(), DurableError> {
        for _ in 0..CAS_RETRIES {
            let Count { started, revision } = self.read(key).await?;
            if started == 0 || self.write(key, started - 1, revision).await? {
                return Ok(());
            }
        }
        Err(self.contended(key))
    }

    /// Attempts started at `key` so far.
    pub async fn read(&self, key: &str) -> Result<Count, DurableError> {
        let entry = self
            .store
            .entry(key)
            .await
            .map_err(|e| self.failed(key, e))?;
        Ok(entry
            .filter(|entry| entry.operation == kv::Operation::Put)
            .map_or(Count::default(), |entry| {
                let started = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .unwrap_or_else(|| {
                        tracing::warn!(%key, "unreadable attempt count; counted from 0");
                        0
                    });
                Count {
                    started,
                    revision: entry.revision,
                }
            }))
    }

    /// Writes `started` if `key` is still at `revision`; false when another worker was first.
    async fn write(&self, key: &str, started: u32, revision: u64) -> Result<bool, DurableError> {
        let value = Bytes::from(started.to_string());
        let written = if revision == 0 {
            self.store.create(key, value).await.map(drop).map_err(|e| {
                (
                    matches!(e.kind(), kv::CreateErrorKind::AlreadyExists),
                    e.to_string(),
                )
            })
        } else {
            self.store
                .update(key, value, revision)
                .await
                .map(drop)
                .map_err(|e| {
                    (
                        matches!(e.kind(), kv::UpdateErrorKind::WrongLastRevision),
                        e.to_string(),
                    )
                })
        };
        match written {
            Ok(()) => Ok(true),
            Err((true, _)) => Ok(false),
            Err((false, message)) => Err(self.failed(key, message)),
        }
    }

    fn failed(&self, key: &str, error: impl Into<Cause>) -> DurableError {
        DurableError::Attempts {
            key: key.to_string(),
            source: error.into(),
        }
    }

    fn contended(&self, key: &str) -> DurableError {
        self.failed(key, format!("{CAS_RETRIES} workers updated it at once"))
    }
}

/// Opens the key-value bucket `config` names, creating it with `config` when it does not
/// exist; an error names both failures.
pub async fn open_bucket(jetstream: &Context, config: kv::Config) -> Result<Store, DurableError> {
    let bucket = config.bucket.clone();
    match jetstream.get_key_value(&bucket).await {
        Ok(store) => Ok(store),
        // Missing, most likely: create it, and name both failures if that fails too.
        Err(get) => {
            jetstream
                .create_key_value(config)
                .await
                .map_err(|create| DurableError::Stream {
                    stream: format!("KV_{bucket}"),
                    source: format!("opening it: {get}; creating it: {create}").into(),
                })
        }
    }
}
