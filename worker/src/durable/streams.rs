//! The three durable streams, created at start-up or checked when they exist.
//!
//! | stream | subjects | retention | storage | limits |
//! |---|---|---|---|---|
//! | `OPENSHELL_JOBS` | `<prefix>.jobs.>` | work queue (a job leaves once acked) | file | `max_bytes` unlimited, `max_age` = `durable.jobs_max_age` (7d), 1 message per subject with discard new per subject (a job id is queued once per tenant), `duplicate_window` 100 ms |
//! | `OPENSHELL_RESULTS` | `<prefix>.results.>` | limits | file | `max_bytes` unlimited, `max_age` = `durable.results_max_age` (24h), `allow_direct` (results are read by direct get), 1 message per subject with discard new per subject (the first result stored is final, whoever publishes), `duplicate_window` 100 ms |
//! | `OPENSHELL_AUDIT` | `<prefix>.audit.>` | limits, discard old | file | `max_age` = `durable.audit_max_age` (90d), `max_bytes` = `durable.audit_max_bytes` (1g), `duplicate_window` 100 ms |
//!
//! Identity is by subject, never by `Nats-Msg-Id`: JetStream deduplicates message ids across
//! the whole stream, so a tenant could pre-empt another tenant's id with that header. OpenShell
//! sets none, and the duplicate window is the server's minimum, so a header an agent sets
//! anyway reaches as little as possible.
//!
//! Every stream (and the `OPENSHELL_ATTEMPTS` and `OPENSHELL_LEASES` buckets) has
//! `durable.replicas` copies; on a clustered server, 1 warns that the loss of the node holding
//! a stream stops durable mode until it returns.
//!
//! An existing stream whose subjects, retention, storage, direct get or per-subject limit differ
//! is an error (the worker does not start and does not change it); differing limits are logged
//! and left as they are.

use async_nats::jetstream::Context;
use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType, Stream};

use std::time::Duration;

use super::DurableError;
use super::subjects::DurableSubjects;
use crate::config::DurableConfig;

/// Name of the jobs stream.
pub const JOBS: &str = "OPENSHELL_JOBS";
/// Name of the results stream.
pub const RESULTS: &str = "OPENSHELL_RESULTS";
/// Name of the audit stream.
pub const AUDIT: &str = "OPENSHELL_AUDIT";

/// The duplicate window of every stream: the server's minimum, since no identity rests on it.
const DUPLICATE_WINDOW: Duration = Duration::from_millis(100);

/// The streams a durable worker uses.
#[derive(Debug, Clone)]
pub struct Streams {
    /// `OPENSHELL_JOBS`.
    pub jobs: Stream,
    /// `OPENSHELL_RESULTS`.
    pub results: Stream,
}

/// The documented settings of the three streams.
pub fn configs(subjects: &DurableSubjects, settings: &DurableConfig) -> [Config; 3] {
    [
        Config {
            name: JOBS.into(),
            description: Some("OpenShell queued jobs (work queue)".into()),
            subjects: vec![subjects.all_jobs()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            max_bytes: -1,
            max_age: settings.jobs_max_age.as_duration(),
            duplicate_window: DUPLICATE_WINDOW,
            max_messages_per_subject: 1,
            discard: DiscardPolicy::New,
            discard_new_per_subject: true,
            num_replicas: settings.replicas,
            ..Config::default()
        },
        Config {
            name: RESULTS.into(),
            description: Some("OpenShell job results, by tenant and job id".into()),
            subjects: vec![subjects.all_results()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            max_bytes: -1,
            max_age: settings.results_max_age.as_duration(),
            duplicate_window: DUPLICATE_WINDOW,
            allow_direct: true,
            max_messages_per_subject: 1,
            discard: DiscardPolicy::New,
            discard_new_per_subject: true,
            num_replicas: settings.replicas,
            ..Config::default()
        },
        Config {
            name: AUDIT.into(),
            description: Some("OpenShell audit events".into()),
            subjects: vec![subjects.all_audit()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            discard: DiscardPolicy::Old,
            max_age: settings.audit_max_age.as_duration(),
            max_bytes: i64::try_from(settings.audit_max_bytes.bytes()).unwrap_or(i64::MAX),
            duplicate_window: DUPLICATE_WINDOW,
            num_replicas: settings.replicas,
            ..Config::default()
        },
    ]
}

/// Creates the three streams, or checks the ones that exist.
pub async fn ensure(
    jetstream: &Context,
    subjects: &DurableSubjects,
    settings: &DurableConfig,
) -> Result<Streams, DurableError> {
    let [jobs, results, audit] = configs(subjects, settings);
    let jobs = ensure_one(jetstream, jobs).await?;
    let results = ensure_one(jetstream, results).await?;
    ensure_one(jetstream, audit).await?;
    Ok(Streams { jobs, results })
}

async fn ensure_one(jetstream: &Context, wanted: Config) -> Result<Stream, DurableError> {
    let mut stream = jetstream
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|error| DurableError::Stream {
            stream: wanted.name.clone(),
            source: error.into(),
        })?;
    let found = &stream
        .info()
        .await
        .map_err(|error| DurableError::Stream {
            stream: wanted.name.clone(),
            source: error.into(),
        })?
        .config;
    let (incompatible, drifted) = compare(found, &wanted);
    if !incompatible.is_empty() {
        return Err(DurableError::IncompatibleStream {
            stream: wanted.name,
            differences: incompatible.join("; "),
        });
    }
    if !drifted.is_empty() {
        tracing::warn!(stream = %wanted.name, differences = %drifted.join("; "), "stream limits differ from the configuration; left as they are (edit the stream to apply them)");
    }
    await_leader(&mut stream, &wanted.name).await;
    Ok(stream)
}

/// How long a worker waits at start for a new replicated stream to elect its leader.
const LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits until `stream` has a leader (at once on a single server): on a cluster a stream just
/// created answers `info` before it takes messages, and a job run then could not store its
/// result, so it would be run again.
async fn await_leader(stream: &mut Stream, name: &str) {
    let give_up = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        let led = match stream.info().await {
            Ok(info) => info.cluster.as_ref().is_none_or(|cluster| {
                cluster
                    .leader
                    .as_deref()
                    .is_some_and(|leader| !leader.is_empty())
            }),
            Err(_) => false,
        };
        if led {
            return;
        }
        if tokio::time::Instant::now() >= give_up {
            tracing::warn!(stream = %name, "the stream has no leader after {LEADER_WAIT:?}; serving anyway");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The settings of `found` that break OpenShell, and those that only differ in limits.
pub fn compare(found: &Config, wanted: &Config) -> (Vec<String>, Vec<String>) {
    let mut incompatible = Vec::new();
    let mut drifted = Vec::new();
    let differ =
        |name: &str, found: String, wanted: String| format!("{name}: found {found}, need {wanted}");
    if found.subjects != wanted.subjects {
        incompatible.push(differ(
            "subjects",
            format!("{:?}", found.subjects),
            format!("{:?}", wanted.subjects),
        ));
    }
    if found.retention != wanted.retention {
        incompatible.push(differ(
            "retention",
            format!("{:?}", found.retention),
            format!("{:?}", wanted.retention),
        ));
    }
    if found.storage != wanted.storage {
        incompatible.push(differ(
            "storage",
            format!("{:?}", found.storage),
            format!("{:?}", wanted.storage),
        ));
    }
    if wanted.allow_direct && !found.allow_direct {
        incompatible.push(format!(
            "allow_direct: found false, need true (results are read by direct get; `nats stream edit {} --allow-direct`)",
            wanted.name
        ));
    }
    if wanted.discard_new_per_subject
        && (!found.discard_new_per_subject || found.max_messages_per_subject != 1)
    {
        incompatible.push(format!(
            "max_messages_per_subject {} with discard_new_per_subject {}: need 1 and true, so a job is queued and stored once per tenant and id (`nats stream edit {} --max-msgs-per-subject 1 --discard new --discard-per-subject`)",
            found.max_messages_per_subject, found.discard_new_per_subject, wanted.name
        ));
    }
    for (name, found, wanted) in [
        ("max_age", found.max_age, wanted.max_age),
        (
            "duplicate_window",
            found.duplicate_window,
            wanted.duplicate_window,
        ),
    ] {
        if found != wanted {
            drifted.push(differ(name, format!("{found:?}"), format!("{wanted:?}")));
        }
    }
    if found.num_replicas != wanted.num_replicas {
        drifted.push(format!(
            "replicas: found {}, configured {} (`nats stream edit {} --replicas {}`)",
            found.num_replicas, wanted.num_replicas, wanted.name, wanted.num_replicas
        ));
    }
    if found.max_bytes != wanted.max_bytes {
        drifted.push(differ(
            "max_bytes",
            found.max_bytes.to_string(),
            wanted.max_bytes.to_string(),
        ));
    }
    (incompatible, drifted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_retention_is_incompatible_other_limits_drift() {
        let subjects = DurableSubjects::new("openshell");
        let [jobs, ..] = configs(&subjects, &DurableConfig::default());
        assert_eq!(compare(&jobs, &jobs), (vec![], vec![]));
        let mut found = jobs.clone();
        found.retention = RetentionPolicy::Limits;
        found.max_age = std::time::Duration::from_secs(1);
        let (incompatible, drifted) = compare(&found, &jobs);
        assert_eq!(incompatible.len(), 1, "{incompatible:?}");
        assert!(incompatible[0].starts_with("retention"));
        assert_eq!(drifted.len(), 1, "{drifted:?}");
    }
}
