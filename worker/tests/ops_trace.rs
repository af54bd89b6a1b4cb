//! W3C trace context through a real nats-server and `openshell worker` (local backend): a
//! `traceparent` NATS header, or the request field when there is no valid header, reaches the
//! result, every audit event of the job and the job's JSON log lines; an invalid one is ignored
//! and the job still runs.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::HeaderMap;
use futures::StreamExt;
use openshell_protocol::{AuditEvent, ExecRequest, ExecResult, Verdict};
use openshell_test_support::Openshell;
use openshell_test_support::nats::NatsServer;

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

const HEADER_TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const FIELD_TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

/// Sends `request` to pool `none` as tenant `acme`, with a `traceparent` header if given;
/// returns the result and its JSON as sent.
async fn exec(
    client: &async_nats::Client,
    request: &ExecRequest,
    header: Option<&str>,
) -> (ExecResult, serde_json::Value) {
    let mut headers = HeaderMap::new();
    if let Some(value) = header {
        headers.insert("traceparent", value);
    }
    let payload = serde_json::to_vec(request).expect("encode request");
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        client.request_with_headers("openshell.exec.none.acme", headers, payload.into()),
    )
    .await
    .expect("a reply within 30 s")
    .expect("a reply");
    let result = serde_json::from_slice(&reply.payload).expect("a result");
    let json = serde_json::from_slice(&reply.payload).expect("JSON");
    (result, json)
}

fn request(id: &str, field: Option<&str>) -> ExecRequest {
    let mut request = ExecRequest::command(id, vec!["true".into()]);
    request.traceparent = field.map(str::to_string);
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn traceparent_reaches_the_result_audit_events_and_logs() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let mut worker = OPENSHELL
        .local_worker(&nats, &[("LOG_FORMAT", "json"), ("LOG_LEVEL", "debug")])
        .await;
    let client = async_nats::connect(&url).await.expect("connect");
    let mut audit = client
        .subscribe("openshell.audit.>")
        .await
        .expect("subscribe to audit");
    client.flush().await.expect("flush");

    // Header wins over the field; an invalid header leaves the field; an invalid field is
    // ignored; none at all is omitted.
    let cases = [
        (
            "by-header",
            Some(HEADER_TRACE),
            Some(FIELD_TRACE),
            Some(HEADER_TRACE),
        ),
        (
            "by-field",
            Some("00-nope"),
            Some(FIELD_TRACE),
            Some(FIELD_TRACE),
        ),
        ("bad-field", None, Some("01-xyz"), None),
        ("untraced", None, None, None),
    ];
    for (id, header, field, expected) in cases {
        let (result, json) = exec(&client, &request(id, field), header).await;
        assert_eq!(result.status, Verdict::Completed, "{id}: {result:?}");
        assert_eq!(result.traceparent.as_deref(), expected, "{id}: {result:?}");
        assert_eq!(
            json.get("traceparent").is_some(),
            expected.is_some(),
            "{id}: omitted when absent: {json}"
        );
    }

    let mut events: BTreeMap<String, Vec<AuditEvent>> = BTreeMap::new();
    while events.values().map(Vec::len).sum::<usize>() < 3 * cases.len() {
        let message = tokio::time::timeout(Duration::from_secs(10), audit.next())
            .await
            .unwrap_or_else(|_| panic!("audit events missing; got {events:?}"))
            .expect("audit subscription open");
        let event: AuditEvent = serde_json::from_slice(&message.payload).expect("an audit event");
        events.entry(event.job_id.clone()).or_default().push(event);
    }
    for (id, _, _, expected) in cases {
        let of_job = &events[id];
        assert_eq!(of_job.len(), 3, "{id}: received, started, finished");
        for event in of_job {
            assert_eq!(
                event.traceparent.as_deref(),
                expected,
                "{id} {}: {event:?}",
                event.event
            );
        }
    }

    worker.terminate().await;
    let logs = worker.logs();
    let finished: BTreeMap<String, serde_json::Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|json| json["fields"]["message"] == "job finished")
        .map(|json| (json["span"]["id"].as_str().unwrap_or("").to_string(), json))
        .collect();
    for (id, _, _, expected) in cases {
        let line = finished
            .get(id)
            .unwrap_or_else(|| panic!("no `job finished` line for {id}:\n{logs}"));
        assert_eq!(
            line["span"]["traceparent"].as_str(),
            expected,
            "{id}: {line}"
        );
    }
    assert!(
        logs.contains("ignoring an invalid traceparent"),
        "invalid ones are logged at debug level:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn traceparent_header_of_a_queued_job_reaches_its_stored_result() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let _worker = OPENSHELL
        .local_worker(&nats, &[("OPENSHELL_DURABLE", "true")])
        .await;
    let client = async_nats::connect(url.as_str()).await.expect("connect");
    let jetstream = async_nats::jetstream::new(client.clone());
    let payload = serde_json::to_vec(&request("queued", None)).expect("encode request");
    jetstream
        .send_publish(
            "openshell.jobs.none.acme.queued",
            async_nats::jetstream::message::PublishMessage::build()
                .payload(payload.into())
                .header("traceparent", HEADER_TRACE),
        )
        .await
        .expect("publish")
        .await
        .expect("stored in OPENSHELL_JOBS");
    let durable = openshell_worker::durable::client::DurableClient::new(client, "openshell");
    let result = durable
        .result("acme", "queued", Duration::from_secs(30))
        .await
        .expect("read result")
        .expect("a stored result");
    assert_eq!(result.status, Verdict::Completed, "{result:?}");
    assert_eq!(result.traceparent.as_deref(), Some(HEADER_TRACE));
}
