//! Every request leaves its audit record, whatever its size: at the exact input limit a valid
//! request is audited `received` (with its code verbatim), `started` and `finished`, and a
//! refused one `rejected` with its code; one byte over, it is refused as `payload_too_large` and
//! still audited `rejected`. Against a real nats-server with its default `max_payload` (1 MiB),
//! in core mode and in durable mode (stored by the audit stream).

// Integration tests are test code: lets clippy.toml's allow-unwrap-in-tests see it.
#![cfg(test)]

mod durable;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use openshell_protocol::{
    AuditEvent, AuditEventType, ErrorKind, ExecResult, Verdict, max_request_within,
};
use openshell_test_support::Openshell;
use openshell_test_support::nats::NatsServer;

const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));
/// Files a worker returns per job by default (`files.max_files`): each takes room in the
/// `finished` event, which the request limit leaves.
const DEFAULT_RETURNED_FILES: usize = 16;

/// A `sh` request of exactly `size` bytes: `true`, then a comment padding it out.
fn request_of(id: &str, size: usize, network: bool) -> Bytes {
    let head = format!(r#"{{"id":"{id}","language":"sh","network":{network},"code":"true\n#"#);
    let tail = r#""}"#;
    let pad = size - head.len() - tail.len();
    Bytes::from(format!("{head}{}{tail}", "c".repeat(pad)))
}

/// The audit events of `id` among `events`, in order.
fn of(events: &[AuditEvent], id: &str) -> Vec<AuditEventType> {
    events
        .iter()
        .filter(|event| event.job_id == id)
        .map(|event| event.event)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_at_the_input_limit_are_audited_in_core_mode() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let worker = OPENSHELL
        .local_worker(&nats, &[("OPENSHELL_WORKER_ID", "w-size")])
        .await;
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let max_payload = client.server_info().max_payload;
    assert_eq!(max_payload, 1024 * 1024, "the server's default max_payload");
    let limit = max_request_within(max_payload, DEFAULT_RETURNED_FILES);
    let mut audit = client.subscribe("openshell.audit.>").await.expect("sub");
    client.flush().await.expect("flush");

    let ask = |payload: Bytes| {
        let client = client.clone();
        async move {
            let reply = tokio::time::timeout(
                Duration::from_secs(60),
                client.request("openshell.exec.none.default", payload),
            )
            .await
            .expect("a reply in time")
            .expect("a reply");
            serde_json::from_slice::<ExecResult>(&reply.payload).expect("a result")
        }
    };
    let ran = ask(request_of("at-limit", limit, false)).await;
    assert_eq!(ran.status, Verdict::Completed, "{:?}", ran.error);
    let refused = ask(request_of("at-limit-refused", limit, true)).await;
    assert_eq!(
        refused.error.as_ref().map(|error| error.kind),
        Some(ErrorKind::NetworkNotAllowed)
    );
    let over = ask(request_of("over-limit", limit + 1, false)).await;
    assert_eq!(
        over.error.as_ref().map(|error| error.kind),
        Some(ErrorKind::PayloadTooLarge)
    );

    let mut events = Vec::new();
    let mut payloads = Vec::new();
    while events.len() < 5 {
        let message = tokio::time::timeout(Duration::from_secs(10), audit.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} audit events: {events:?}\n{}",
                    events.len(),
                    worker.logs()
                )
            })
            .expect("subscription open");
        events.push(serde_json::from_slice::<AuditEvent>(&message.payload).expect("an event"));
        payloads.push(message.payload);
    }
    // The large events are chained like any other: seq 1 to 5, each `prev` the SHA-256 of
    // the previous payload as received.
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.seq, Some(index as u64 + 1));
        let prev = match index {
            0 => openshell_protocol::audit::GENESIS_HASH.to_string(),
            _ => openshell_protocol::request::sha256_hex(&payloads[index - 1]),
        };
        assert_eq!(event.prev.as_deref(), Some(prev.as_str()));
    }
    use AuditEventType::{Finished, Received, Rejected, Started};
    assert_eq!(of(&events, "at-limit"), [Received, Started, Finished]);
    assert_eq!(of(&events, "at-limit-refused"), [Rejected]);
    assert_eq!(of(&events, "over-limit"), [Rejected]);
    let code_of = |id: &str, network: bool| {
        let sent = request_of(id, limit, network);
        let request = serde_json::from_slice::<serde_json::Value>(&sent).expect("json");
        request["code"].as_str().map(str::to_string)
    };
    let received = events
        .iter()
        .find(|e| e.event == Received)
        .expect("received");
    assert_eq!(
        received.code,
        code_of("at-limit", false),
        "the code verbatim"
    );
    let rejected = events
        .iter()
        .find(|e| e.job_id == "at-limit-refused")
        .expect("rejected");
    assert_eq!(
        rejected.code,
        code_of("at-limit-refused", true),
        "the refused request's code is on its record"
    );
    let over = events
        .iter()
        .find(|e| e.job_id == "over-limit")
        .expect("rejected");
    assert_eq!(over.request_bytes, limit as u64 + 1);
    assert!(
        !worker.logs().contains("audit event lost"),
        "{}",
        worker.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_at_the_input_limit_are_stored_by_the_audit_stream_in_durable_mode() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let worker = durable::worker(&nats, "w-size", &[]).await;
    let (connection, _client) = durable::client(&nats).await;
    let limit = max_request_within(connection.server_info().max_payload, DEFAULT_RETURNED_FILES);
    let jetstream = async_nats::jetstream::new(connection.clone());
    for (id, network) in [("stored-at-limit", false), ("stored-refused", true)] {
        jetstream
            .publish(
                format!("openshell.jobs.none.default.{id}"),
                request_of(id, limit, network),
            )
            .await
            .expect("queue")
            .await
            .expect("queued");
    }
    let ids = ["stored-at-limit".to_string(), "stored-refused".to_string()];
    let (_, client) = durable::client(&nats).await;
    let results = durable::await_results(&client, "default", &ids, Duration::from_secs(60)).await;
    assert_eq!(results["stored-at-limit"].status, Verdict::Completed);
    assert_eq!(results["stored-refused"].status, Verdict::Rejected);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = durable::audit_events(&connection).await;
    use AuditEventType::{Finished, Received, Rejected, Started};
    assert_eq!(
        of(&events, "stored-at-limit"),
        [Received, Started, Finished],
        "{}",
        worker.logs()
    );
    assert_eq!(of(&events, "stored-refused"), [Rejected]);
    assert!(
        events
            .iter()
            .filter(|event| event.job_id.starts_with("stored"))
            .filter(|event| matches!(event.event, Received | Rejected))
            .all(|event| event
                .code
                .as_ref()
                .is_some_and(|code| code.len() > limit - 100))
    );
}
