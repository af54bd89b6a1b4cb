//! The checked-in JSON Schemas match the Rust types, and every example in protocol/README.md is
//! a valid message: it matches its schema, decodes into its Rust type, passes validation (for
//! requests) and survives a serialize → deserialize round trip. A request marked `invalid` is
//! refused by the decoder with the error its result and audit examples quote. The examples'
//! markers are read by `readme/mod.rs`; `worker/tests/protocol_examples.rs` sends the same
//! examples to a live worker.
//!
//! After changing a message type, rewrite the schemas with
//! `OPENSHELL_BLESS=1 cargo test -p openshell-protocol --test schema`.

// Integration tests are test code: lets clippy.toml's allow-unwrap-in-tests see it.
#![cfg(test)]

mod readme;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use jsonschema::Validator;
use openshell_protocol::audit::AuditContext;
use openshell_protocol::schema::Message;
use openshell_protocol::{
    AuditEvent, AuditEventType, ByteSize, DurationMs, Enforcement, ErrorInfo, ErrorKind,
    ExecRequest, ExecResult, FileSpec, LimitName, Limits, Payload, Traceparent, Verdict, decode,
};
use readme::{Example, Kind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn schema_path(message: Message) -> PathBuf {
    crate_dir().join("schema").join(message.file_name())
}

fn validator(message: Message) -> Validator {
    let schema: Value = serde_json::from_str(&message.schema_json()).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|error| panic!("the {message:?} schema does not compile: {error}"))
}

/// Panics with every schema violation of `instance`, naming `what` it is.
fn assert_matches_schema(validator: &Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|error| format!("  at `{}`: {error}", error.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match its schema:\n{}",
        errors.join("\n")
    );
}

#[test]
fn checked_in_schemas_match_the_types() {
    let bless = std::env::var_os("OPENSHELL_BLESS").is_some_and(|value| value == "1");
    let mut stale = Vec::new();
    for message in Message::ALL {
        let path = schema_path(message);
        let generated = message.schema_json();
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        if checked_in != generated {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "these schemas differ from the Rust types: {stale:?}; if the change is intended, run \
         `OPENSHELL_BLESS=1 cargo test -p openshell-protocol --test schema` and commit them \
         (a changed field is a wire change: see protocol/README.md, Versioning)"
    );
}

#[test]
fn every_schema_compiles_and_names_its_draft() {
    for message in Message::ALL {
        let schema: Value = serde_json::from_str(&message.schema_json()).unwrap();
        assert!(
            schema["$schema"]
                .as_str()
                .is_some_and(|draft| draft.contains("2020-12")),
            "{message:?} schema has no 2020-12 `$schema`"
        );
        validator(message);
    }
}

/// `json` decodes into `T`, and `T` serializes to something that decodes to the same `T`.
fn round_trip<T>(json: &str, what: &str) -> T
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let value: T = serde_json::from_str(json)
        .unwrap_or_else(|error| panic!("{what} does not decode: {error}"));
    let again: T = serde_json::from_str(&serde_json::to_string(&value).unwrap()).unwrap();
    assert_eq!(
        again, value,
        "{what} changes in a serialize → deserialize round trip"
    );
    value
}

fn readme_examples() -> Vec<Example> {
    readme::examples(&crate_dir().join("README.md"))
}

/// A request example: its raw bytes, and the request they decode to (`None` for an `invalid`
/// example, which must not decode).
struct SentRequest {
    id: String,
    raw: Vec<u8>,
    decoded: Option<ExecRequest>,
}

#[test]
fn readme_examples_are_valid_messages() {
    let examples = readme_examples();
    let mut requests = Vec::new();
    let mut results = Vec::new();
    let mut verdicts = BTreeSet::new();
    let mut events = BTreeSet::new();
    let mut audits = Vec::new();
    for example in &examples {
        let what = example.what();
        let instance = example.value();
        let Some(message) = example.message() else {
            assert!(instance.is_object(), "{what} is not a JSON object");
            continue;
        };
        if example.has("cancel") {
            assert!(example.has("durable"), "{what}: `cancel` needs `durable`");
        }
        if example.has("invalid") {
            assert_eq!(
                message,
                Message::Request,
                "{what}: only requests are `invalid`"
            );
            let raw = example.json.as_bytes();
            assert!(
                decode::decode_request(raw, usize::MAX).is_err(),
                "{what} is marked invalid but decodes"
            );
            let id = decode::salvage_id(raw).unwrap_or_default();
            requests.push(SentRequest {
                id,
                raw: raw.to_vec(),
                decoded: None,
            });
            continue;
        }
        assert_matches_schema(&validator(message), &instance, &what);
        match message {
            Message::Request => {
                let request: ExecRequest = round_trip(&example.json, &what);
                decode::validate(&request).unwrap_or_else(|error| panic!("{what}: {error}"));
                let decoded = decode::decode_request(example.json.as_bytes(), usize::MAX)
                    .unwrap_or_else(|error| panic!("{what}: {error}"));
                assert_eq!(decoded, request);
                requests.push(SentRequest {
                    id: request.id.clone(),
                    raw: example.json.as_bytes().to_vec(),
                    decoded: Some(request),
                });
            }
            Message::Result => {
                let result: ExecResult = round_trip(&example.json, &what);
                check_result_is_consistent(&result, &what);
                verdicts.insert(result.status.as_str());
                results.push((result, what));
            }
            Message::Audit => {
                let event: AuditEvent = round_trip(&example.json, &what);
                events.insert(event.event.as_str());
                audits.push((event, what));
            }
            Message::Output => {
                let _: openshell_protocol::OutputChunk = round_trip(&example.json, &what);
            }
            Message::FileFetch => {
                let _: openshell_protocol::FileFetch = round_trip(&example.json, &what);
            }
            Message::Checkpoint => {
                let _: openshell_protocol::AuditCheckpoint = round_trip(&example.json, &what);
            }
            Message::SessionOpen => {
                let _: openshell_protocol::session::SessionOpen = round_trip(&example.json, &what);
            }
            Message::SessionOpened => {
                let _: openshell_protocol::session::SessionOpened =
                    round_trip(&example.json, &what);
            }
            Message::SessionClose => {
                let _: openshell_protocol::session::SessionClose = round_trip(&example.json, &what);
            }
            Message::SessionClosed => {
                let _: openshell_protocol::session::SessionClosed =
                    round_trip(&example.json, &what);
            }
            Message::SessionError => {
                let _: openshell_protocol::session::SessionError = round_trip(&example.json, &what);
            }
        }
    }
    let request_named = |id: &str, what: &str| {
        requests
            .iter()
            .find(|request| request.id == id)
            .unwrap_or_else(|| panic!("{what}: no request example has the id `{id}`"))
    };
    for (result, what) in &results {
        let request = request_named(&result.id, what);
        if request.decoded.is_none() {
            check_decoder_error(result.error.as_ref(), &request.raw, what);
        }
    }
    for (event, what) in &audits {
        let request = request_named(&event.job_id, what);
        match &request.decoded {
            Some(decoded) if !is_raw_rejection(event) => {
                check_audit_describes(event, decoded, what);
            }
            _ => check_raw_rejection(event, request, what),
        }
    }
    let decoded: Vec<&ExecRequest> = requests
        .iter()
        .filter_map(|request| request.decoded.as_ref())
        .collect();
    assert!(
        decoded.iter().any(|request| request.code.is_some()),
        "README.md has no request example in the code form"
    );
    assert!(
        decoded.iter().any(|request| request.command.is_some()
            && !request.files.is_empty()
            && request.stdin.is_some()
            && !request.env.is_empty()
            && request.limits != Limits::default()),
        "README.md has no request example in the command form with files, stdin, env and limits"
    );
    for verdict in ["completed", "rejected", "timeout", "cancelled"] {
        assert!(
            verdicts.contains(verdict),
            "README.md has no `{verdict}` result example"
        );
    }
    for event in ["received", "started", "finished", "rejected"] {
        assert!(
            events.contains(event),
            "README.md has no `{event}` audit example"
        );
    }
    for kind in [Kind::SrvInfo, Kind::SrvStats] {
        assert!(
            examples.iter().any(|example| example.kind == kind),
            "README.md has no {kind:?} example"
        );
    }
}

/// The README's results must be ones a worker could send: error iff not completed, with a kind
/// that goes with the verdict.
fn check_result_is_consistent(result: &ExecResult, what: &str) {
    match (&result.error, result.status) {
        (None, Verdict::Completed) => {}
        (Some(error), status) => assert_eq!(
            Verdict::for_error(error.kind),
            status,
            "{what}: error kind {} does not go with verdict {status}",
            error.kind
        ),
        (None, status) => panic!("{what}: verdict {status} without an error"),
    }
}

/// An audit example of a README request carries exactly what the worker computes from it, so
/// the hashes in the README are ones an auditor can recompute.
fn check_audit_describes(event: &AuditEvent, request: &ExecRequest, what: &str) {
    let limits = event.limits.clone().unwrap_or_default();
    let expected = AuditEvent::for_request(
        event.event,
        request,
        event.request_bytes as usize,
        &limits,
        &AuditContext::default(),
    );
    assert_eq!(
        event.sha256, expected.sha256,
        "{what}: `sha256` is not the hash of the program"
    );
    assert_eq!(
        event.files, expected.files,
        "{what}: `files` sizes or hashes are wrong"
    );
    assert_eq!(
        event.stdin_sha256, expected.stdin_sha256,
        "{what}: `stdin_sha256` is wrong"
    );
    assert_eq!(
        event.env_keys, expected.env_keys,
        "{what}: `env_keys` is wrong"
    );
    assert_eq!(
        (&event.language, &event.command, &event.args),
        (&expected.language, &expected.command, &expected.args),
        "{what}: the program differs from the request's"
    );
    let carries_code = matches!(
        event.event,
        AuditEventType::Received | AuditEventType::Rejected
    );
    let code = carries_code.then(|| expected.code.clone()).flatten();
    assert_eq!(
        event.code, code,
        "{what}: `code` is only on `received` and `rejected`"
    );
    let asked = request
        .limits
        .iter()
        .all(|(name, value)| limits.get(name) == Some(value));
    assert!(
        asked,
        "{what}: effective `limits` differ from what the request asked"
    );
    assert_eq!(
        event.usage.is_some(),
        event.event == AuditEventType::Finished,
        "{what}: `usage` belongs on `finished` only"
    );
}

/// A `rejected` event of a request refused before it was decoded (or without decoding it, as a
/// durable job taken from the queue is): it describes the raw bytes, not the program.
fn is_raw_rejection(event: &AuditEvent) -> bool {
    event.event == AuditEventType::Rejected
        && event.language.is_none()
        && event.command.is_none()
        && event.limits.is_none()
}

/// A raw `rejected` audit example hashes the raw bytes of its request example; for a request
/// that does not decode, its error is the decoder's own, word for word.
fn check_raw_rejection(event: &AuditEvent, request: &SentRequest, what: &str) {
    assert!(
        is_raw_rejection(event),
        "{what}: an event of a request that does not decode can only be a raw `rejected` one"
    );
    assert_eq!(
        event.sha256,
        openshell_protocol::request::sha256_hex(&request.raw),
        "{what}: sha256 is not the hash of the request's raw bytes"
    );
    assert_eq!(
        event.request_bytes,
        request.raw.len() as u64,
        "{what}: request_bytes"
    );
    assert_eq!(
        event.usage, None,
        "{what}: a raw rejection carries no `usage`"
    );
    if request.decoded.is_none() {
        assert_eq!(
            decode::salvage_id(&request.raw).as_deref(),
            Some(event.job_id.as_str()),
            "{what}: job_id"
        );
        check_decoder_error(event.error.as_ref(), &request.raw, what);
    }
}

/// `error` is exactly what the decoder says of `raw`.
fn check_decoder_error(error: Option<&ErrorInfo>, raw: &[u8], what: &str) {
    let decoded = decode::decode_request(raw, usize::MAX).unwrap_err();
    assert_eq!(
        error,
        Some(&decoded.to_info()),
        "{what}: not the decoder's error"
    );
}

/// `nats req SUBJECT 'JSON'` lines in the README send valid requests.
#[test]
fn readme_shell_examples_send_valid_requests() {
    let readme = std::fs::read_to_string(crate_dir().join("README.md")).unwrap();
    let mut found = 0;
    for (index, line) in readme.lines().enumerate() {
        if !line.trim().starts_with("nats req ") {
            continue;
        }
        let (Some(open), Some(close)) = (line.find('\''), line.rfind('\'')) else {
            continue;
        };
        let subject = line[..open].split_whitespace().last().unwrap_or_default();
        let json = &line[open + 1..close];
        let what = format!("README.md line {}", index + 1);
        assert!(
            subject.starts_with("openshell.exec."),
            "{what}: `{subject}` is not an exec subject"
        );
        decode::decode_request(json.as_bytes(), usize::MAX)
            .unwrap_or_else(|error| panic!("{what}: {error}"));
        found += 1;
    }
    assert!(found > 0, "README.md has no `nats req` example");
}

/// A valid W3C `traceparent`.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn sample_request() -> ExecRequest {
    let mut request = ExecRequest::command("job-7", vec!["sh".into(), "run.sh".into()]);
    request.args = vec!["--fast".into()];
    request.stdin = Some(Payload(vec![0, 255, 10]));
    request.env.insert("MODE".into(), "test".into());
    request.files.push(FileSpec {
        path: "run.sh".parse().unwrap(),
        content: Payload::from("echo hi\n"),
        mode: Some(0o755),
    });
    request.limits = Limits {
        timeout: Some(DurationMs::secs(5)),
        memory: Some(ByteSize::mib(256)),
        cpus: Some(0.5),
        ..Limits::default()
    };
    request.priority = -3;
    request.network = true.into();
    request.deadline = Some("2030-01-01T00:00:00Z".parse().unwrap());
    request.traceparent = Some(TRACEPARENT.into());
    request
}

/// Messages built by the crate's own constructors match the schemas: what a worker sends is
/// what the schema promises.
#[test]
fn constructed_messages_match_the_schemas() {
    let request = sample_request();
    assert_matches_schema(
        &validator(Message::Request),
        &serde_json::to_value(&request).unwrap(),
        "a full request",
    );

    let mut result = ExecResult::new("job-7", Verdict::Timeout);
    result.stdout = Payload(vec![0xff, 0xfe]);
    result.limits = request.limits.clone();
    result
        .enforcement
        .insert(LimitName::Timeout, Enforcement::enforced("worker timer"));
    result
        .enforcement
        .insert(LimitName::Cpus, Enforcement::not_enforced("no cgroup"));
    result.error = Some(ErrorInfo::new(ErrorKind::TimeoutExceeded, "ran past 5s"));
    result.traceparent = Some(TRACEPARENT.into());
    let rejected = ExecResult::failed("", ErrorInfo::new(ErrorKind::InvalidRequest, "not JSON"));
    for result in [result, rejected] {
        let what = format!("a {} result", result.status);
        assert_matches_schema(
            &validator(Message::Result),
            &serde_json::to_value(&result).unwrap(),
            &what,
        );
    }

    let context = AuditContext {
        tenant: "acme".into(),
        pool: "none".into(),
        backend: "none".into(),
        worker_id: "w1".into(),
        traceparent: Traceparent::parse(TRACEPARENT).ok(),
    };
    let received = AuditEvent::for_request(
        AuditEventType::Received,
        &request,
        300,
        &request.limits,
        &context,
    );
    let finished = received
        .clone()
        .finish(&ExecResult::new("job-7", Verdict::Completed));
    let raw = AuditEvent::rejected_raw(
        "",
        b"{",
        ErrorInfo::new(ErrorKind::InvalidRequest, "EOF"),
        &context,
    );
    for event in [received, finished, raw] {
        let what = format!("a {} audit event", event.event);
        assert_matches_schema(
            &validator(Message::Audit),
            &serde_json::to_value(&event).unwrap(),
            &what,
        );
    }
}

/// The schemas refuse what the decoder refuses, where a schema can say it.
#[test]
fn schemas_reject_what_the_decoder_rejects() {
    let request = validator(Message::Request);
    for bad in [
        r#"{"language": "python", "code": "1"}"#,
        r#"{"id": "a", "command": ["ls"], "extra": 1}"#,
        r#"{"id": "a", "command": ["ls"], "limits": {"memory": "12q"}}"#,
        r#"{"id": "a", "command": ["ls"], "limits": {"memory": -1}}"#,
        r#"{"id": "a", "command": ["ls"], "limits": {"swap": 1}}"#,
        r#"{"id": "a", "command": ["ls"], "stdin": 5}"#,
        r#"{"id": "a", "command": ["ls"], "stdin": {"hex": "00"}}"#,
        r#"{"id": "a", "command": ["ls"], "files": [{"path": "a"}]}"#,
        r#"{"id": "a", "command": ["ls"], "env": {"A": 1}}"#,
    ] {
        let instance: Value = serde_json::from_str(bad).unwrap();
        assert!(
            !request.is_valid(&instance),
            "the request schema accepts {bad}"
        );
        assert!(
            decode::decode_request(bad.as_bytes(), usize::MAX).is_err(),
            "the decoder accepts {bad}"
        );
    }
}
