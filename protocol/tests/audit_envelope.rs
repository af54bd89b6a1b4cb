//! Every request a worker accepts can be audited: the largest `received` and `rejected`
//! events of a request at the limit fit in a NATS message of the server's `max_payload`.

// Integration tests are test code: lets clippy.toml's allow-unwrap-in-tests see it.
#![cfg(test)]

use openshell_protocol::audit::AuditContext;
use openshell_protocol::decode::{MAX_ERROR_MESSAGE_BYTES, MAX_FILES, MAX_PATH_BYTES};
use openshell_protocol::{
    AUDIT_ENVELOPE_BYTES, AUDITED_OUTPUT_BYTES, AuditEvent, AuditEventType, ErrorInfo, ErrorKind,
    ExecResult, Limits, Traceparent, Verdict, decode_request, max_request_within,
};

const MAX_PAYLOAD: usize = 1024 * 1024;
/// The most files a worker may return per job (`files.max_files` at its ceiling).
const RETURNED: usize = 256;

/// A request of exactly `size` bytes built to make its audit event as large as possible
/// next to its own size: every file empty with a short path (each costs a size and a hash
/// in the event), an empty stdin, and code filling the rest.
fn largest_request(size: usize) -> String {
    let files: Vec<String> = (0..MAX_FILES)
        .map(|n| format!(r#"{{"path":"{n}","content":""}}"#))
        .collect();
    let head = format!(
        r#"{{"id":"{}","language":"sh","stdin":"","files":[{}],"code":""#,
        "j".repeat(128),
        files.join(",")
    );
    let tail = r#""}"#;
    let pad = size - head.len() - tail.len();
    format!("{head}{}{tail}", "x".repeat(pad))
}

/// The command form of [`largest_request`]: the argv fills the rest.
fn largest_command(size: usize) -> String {
    let files: Vec<String> = (0..MAX_FILES)
        .map(|n| format!(r#"{{"path":"{n}","content":""}}"#))
        .collect();
    let head = format!(
        r#"{{"id":"{}","stdin":"","files":[{}],"command":[""#,
        "j".repeat(128),
        files.join(",")
    );
    let tail = r#""]}"#;
    let pad = size - head.len() - tail.len();
    format!("{head}{}{tail}", "x".repeat(pad))
}

fn context() -> AuditContext {
    AuditContext {
        tenant: "t".repeat(128),
        pool: "p".repeat(128),
        backend: "b".repeat(32),
        worker_id: "w".repeat(256),
        traceparent: Some(
            Traceparent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap(),
        ),
    }
}

fn sealed(mut event: AuditEvent) -> usize {
    event.chain = Some("c".repeat(32));
    event.seq = Some(u64::MAX);
    event.prev = Some("f".repeat(64));
    serde_json::to_vec(&event).unwrap().len()
}

#[test]
fn the_largest_request_accepted_has_audit_events_within_max_payload() {
    let limit = max_request_within(MAX_PAYLOAD, RETURNED);
    assert_eq!(
        limit,
        MAX_PAYLOAD - AUDIT_ENVELOPE_BYTES - RETURNED * AUDITED_OUTPUT_BYTES
    );
    let raw = largest_request(limit);
    assert_eq!(raw.len(), limit);
    let request = decode_request(raw.as_bytes(), limit).expect("the largest request decodes");
    let limits = Limits {
        timeout: Some("10m".parse().unwrap()),
        cpu_time: Some("10m".parse().unwrap()),
        memory: Some("4g".parse().unwrap()),
        cpus: Some(0.123_456_789),
        processes: Some(u64::MAX),
        open_files: Some(u64::MAX),
        output: Some("4g".parse().unwrap()),
        disk: Some("4g".parse().unwrap()),
    };
    let received = AuditEvent::for_request(
        AuditEventType::Received,
        &request,
        raw.len(),
        &limits,
        &context(),
    );
    let error = ErrorInfo::new(
        ErrorKind::NetworkNotAllowed,
        "e".repeat(MAX_ERROR_MESSAGE_BYTES),
    );
    let mut result = ExecResult::failed(&request.id, error);
    result.status = Verdict::Rejected;
    result.exit_code = Some(i32::MIN);
    result.signal = Some(i32::MIN);
    result.wall_time_ms = u64::MAX;
    result.cpu_time_ms = Some(u64::MAX);
    result.peak_memory_bytes = Some(u64::MAX);
    let rejected = AuditEvent::for_request(
        AuditEventType::Rejected,
        &request,
        raw.len(),
        &limits,
        &context(),
    )
    .finish(&result);
    // The job ran and returned as many files as it may, each with the longest path.
    let mut finished_result = ExecResult::new(&request.id, Verdict::Completed);
    finished_result.exit_code = Some(i32::MIN);
    finished_result.outputs = Some(openshell_protocol::ReturnedFiles {
        status: openshell_protocol::FilesStatus::Complete,
        files: (0..RETURNED)
            .map(|n| openshell_protocol::ReturnedFile {
                path: format!("{n:04}{}", "p".repeat(MAX_PATH_BYTES - 4))
                    .parse()
                    .unwrap(),
                size: u64::MAX,
                sha256: "f".repeat(64),
                content: None,
                object: None,
            })
            .collect(),
        skipped: Vec::new(),
        skipped_count: 0,
    });
    let finished = received.clone().finish(&finished_result);
    // `finished` keeps the argv (only code is left to `received`): the command form at the
    // limit is its largest.
    let command = largest_command(limit);
    let command = decode_request(command.as_bytes(), limit).expect("the largest command decodes");
    let finished_command = AuditEvent::for_request(
        AuditEventType::Received,
        &command,
        limit,
        &limits,
        &context(),
    )
    .finish(&finished_result);
    for (name, event) in [
        ("received", received),
        ("rejected", rejected),
        ("finished", finished),
        ("finished (command)", finished_command),
    ] {
        let size = sealed(event);
        assert!(
            size <= MAX_PAYLOAD,
            "the {name} event of a {limit}-byte request is {size} bytes, over {MAX_PAYLOAD}"
        );
    }
}

#[test]
fn a_request_one_byte_over_the_limit_is_refused() {
    let limit = max_request_within(MAX_PAYLOAD, RETURNED);
    let raw = largest_request(limit + 1);
    let error = decode_request(raw.as_bytes(), limit).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::PayloadTooLarge);
}
