//! Durable-mode test helpers: durable workers on the local backend, clients of the worker's
//! durable API, and readers of its results and audit streams. Include with `mod durable;`.
//!
//! Not in `openshell-test-support`: it reads the worker's own durable streams through
//! `openshell_worker::durable`, and the support crate must not depend on the worker.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use openshell_protocol::{AuditEvent, ExecRequest, ExecResult};
use openshell_test_support::nats::NatsServer;
use openshell_test_support::{Openshell, WorkerProcess};
use openshell_worker::durable::client::DurableClient;
use openshell_worker::durable::streams::{AUDIT, RESULTS};

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

/// Starts a durable worker on `nats` with `extra` variables.
pub async fn worker(nats: &NatsServer, id: &str, extra: &[(&str, &str)]) -> WorkerProcess {
    let url = nats.url();
    let mut envs = vec![
        ("NATS_URL", url.as_str()),
        ("SANDBOX_BACKEND", "none"),
        ("OPENSHELL_DURABLE", "true"),
        ("OPENSHELL_WORKER_ID", id),
        ("LOG_LEVEL", "info"),
    ];
    envs.extend_from_slice(extra);
    OPENSHELL.worker(&envs).await
}

/// A client connection and the durable client over it.
pub async fn client(nats: &NatsServer) -> (async_nats::Client, DurableClient) {
    let connection = async_nats::connect(nats.url())
        .await
        .expect("client connects");
    let durable = DurableClient::new(connection.clone(), "openshell");
    (connection, durable)
}

/// A job that sleeps `seconds`.
pub fn sleeper(id: &str, seconds: &str) -> ExecRequest {
    ExecRequest::command(id, vec!["sleep".into(), seconds.into()])
}

/// Waits until every id in `ids` of `tenant` has a stored result, or panics after `within`.
pub async fn await_results(
    client: &DurableClient,
    tenant: &str,
    ids: &[String],
    within: Duration,
) -> HashMap<String, ExecResult> {
    let deadline = Instant::now() + within;
    let mut found = HashMap::new();
    while found.len() < ids.len() {
        let missing: Vec<&String> = ids.iter().filter(|id| !found.contains_key(*id)).collect();
        for id in missing {
            if let Ok(Some(result)) = client.result(tenant, id, Duration::ZERO).await {
                found.insert(id.clone(), result);
            }
        }
        if found.len() < ids.len() {
            assert!(
                Instant::now() < deadline,
                "only {} of {} jobs have a result after {within:?}",
                found.len(),
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    found
}

/// How many messages a stream holds.
pub async fn stream_messages(nats: &async_nats::Client, stream: &str) -> u64 {
    let jetstream = async_nats::jetstream::new(nats.clone());
    let mut stream = jetstream.get_stream(stream).await.expect("stream exists");
    stream.info().await.expect("stream info").state.messages
}

/// Stored results per job subject (each should be 1).
pub async fn results_per_subject(nats: &async_nats::Client) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (subject, _) in read_stream(nats, RESULTS).await {
        *counts.entry(subject).or_insert(0) += 1;
    }
    counts
}

/// Every audit event in the audit stream.
pub async fn audit_events(nats: &async_nats::Client) -> Vec<AuditEvent> {
    read_stream(nats, AUDIT)
        .await
        .into_iter()
        .filter_map(|(_, payload)| serde_json::from_slice(&payload).ok())
        .collect()
}

async fn read_stream(nats: &async_nats::Client, name: &str) -> Vec<(String, bytes::Bytes)> {
    let jetstream = async_nats::jetstream::new(nats.clone());
    let mut stream = jetstream.get_stream(name).await.expect("stream exists");
    let state = stream.info().await.expect("stream info").state.clone();
    let mut messages = Vec::new();
    if state.messages == 0 {
        return messages;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        if let Ok(message) = stream.get_raw_message(sequence).await {
            messages.push((message.subject.to_string(), message.payload));
        }
    }
    messages
}
