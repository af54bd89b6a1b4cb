//! Audit events as protocol/README.md describes them: which event closes a job, what each
//! carries, and hashes an auditor can recompute from the request alone.

// Integration tests are test code: lets clippy.toml's allow-unwrap-in-tests see it.
#![cfg(test)]

use openshell_protocol::audit::AuditContext;
use openshell_protocol::request::sha256_hex;
use openshell_protocol::{
    AuditEvent, AuditEventType, ErrorInfo, ErrorKind, ExecRequest, ExecResult, FileSpec, Limits,
    Payload, Verdict,
};

fn context() -> AuditContext {
    AuditContext {
        tenant: "acme".into(),
        pool: "none".into(),
        backend: "none".into(),
        worker_id: "w1".into(),
        traceparent: None,
    }
}

fn event(kind: AuditEventType, request: &ExecRequest) -> AuditEvent {
    AuditEvent::for_request(kind, request, 100, &request.limits, &context())
}

#[test]
fn an_admitted_job_is_always_closed_by_finished() {
    let request = ExecRequest::code("j1", "python", "print(1)");
    for status in [
        Verdict::Completed,
        Verdict::Cancelled,
        Verdict::Expired,
        Verdict::Rejected,
    ] {
        let finished =
            event(AuditEventType::Received, &request).finish(&ExecResult::new("j1", status));
        assert_eq!(finished.event, AuditEventType::Finished, "{status}");
        assert_eq!(finished.verdict, Some(status));
        assert_eq!(finished.code, None, "the code is on `received` only");
        assert_eq!(finished.sha256, sha256_hex(b"print(1)"));
        assert!(finished.usage.is_some());
    }
}

#[test]
fn a_job_refused_at_admission_is_a_lone_rejected_whatever_the_verdict() {
    let request = ExecRequest::code("j2", "python", "print(2)");
    for kind in [
        ErrorKind::LimitExceedsPolicy,
        ErrorKind::DeadlineExpired,
        ErrorKind::DuplicateJob,
    ] {
        let result = ExecResult::failed("j2", ErrorInfo::new(kind, "no"));
        let rejected = event(AuditEventType::Rejected, &request).finish(&result);
        assert_eq!(rejected.event, AuditEventType::Rejected, "{kind}");
        assert_eq!(rejected.verdict, Some(Verdict::for_error(kind)));
        assert_eq!(rejected.error.map(|error| error.kind), Some(kind));
        assert_eq!(
            rejected.code.as_deref(),
            Some("print(2)"),
            "a readable rejection keeps the code"
        );
    }
}

#[test]
fn unreadable_requests_are_hashed_raw() {
    let raw = b"{\"id\": \"j3\", \"command\": 5}";
    let error = ErrorInfo::new(ErrorKind::InvalidRequest, "bad");
    let event = AuditEvent::rejected_raw("j3", raw, error, &context());
    assert_eq!(event.event, AuditEventType::Rejected);
    assert_eq!(event.sha256, sha256_hex(raw));
    assert_eq!(event.request_bytes, raw.len() as u64);
    assert_eq!(event.verdict, Some(Verdict::Rejected));
    assert_eq!(
        (event.code, event.command, event.limits),
        (None, None, None)
    );
}

#[test]
fn hashes_follow_the_readme_definition() {
    // A command hashes its elements joined by single NUL bytes; `args` are not included.
    let mut request = ExecRequest::command("j4", vec!["sh".into(), "run.sh".into()]);
    request.args = vec!["data.bin".into()];
    request.stdin = Some(Payload::from("world\n"));
    request.files.push(FileSpec {
        path: "data.bin".parse().unwrap(),
        content: Payload(vec![0, 1, 2, 255, 254, 253]),
        mode: None,
    });
    request.env.insert("B".into(), "secret".into());
    request.env.insert("A".into(), "secret".into());
    let received = event(AuditEventType::Received, &request);
    assert_eq!(
        received.sha256,
        "25275706362c0f1827e284bdbe802840a3b1d54083d5bc5e8d3d286c52b273ad"
    );
    assert_eq!(received.sha256, sha256_hex(b"sh\0run.sh"));
    assert_eq!(received.stdin_sha256, Some(sha256_hex(b"world\n")));
    assert_eq!(received.files[0].size, 6);
    assert_eq!(
        received.files[0].sha256,
        "feb1aba6fea741741b1bbcc974f74fed337b535b8eec7223b6dd15d7108f08e3"
    );
    // Names are audited, sorted; values are not.
    assert_eq!(received.env_keys, ["A", "B"]);
    assert!(!serde_json::to_string(&received).unwrap().contains("secret"));
    // Code hashes its UTF-8 bytes, whatever the language.
    let code = ExecRequest::code("j5", "python", "print(6*7)\n");
    assert_eq!(
        event(AuditEventType::Received, &code).sha256,
        "3e225f6106861ea243bded8ea35b4c628f7dfd5b20586b613b6b1f7140120c3e"
    );
    assert_eq!(
        code.source_sha256(),
        ExecRequest::code("j6", "bash", "print(6*7)\n").source_sha256()
    );
}

#[test]
fn received_carries_the_effective_limits() {
    let request = ExecRequest::command("j7", vec!["true".into()]);
    let effective = Limits {
        timeout: Some(openshell_protocol::DurationMs::secs(30)),
        ..Limits::default()
    };
    let received = AuditEvent::for_request(
        AuditEventType::Received,
        &request,
        10,
        &effective,
        &context(),
    );
    assert_eq!(received.limits, Some(effective));
    assert_eq!(
        (
            received.tenant.as_str(),
            received.pool.as_str(),
            received.worker_id.as_str()
        ),
        ("acme", "none", "w1")
    );
}

#[test]
fn a_killing_signal_travels_with_its_name() {
    let request = ExecRequest::code("j1", "python", "print(1)");
    let mut result = ExecResult::new("j1", Verdict::Completed);
    result.set_signal(Some(9));
    let json = serde_json::to_value(&result).unwrap();
    assert_eq!(json["signal"], 9);
    assert_eq!(json["signal_name"], "SIGKILL");
    let usage = event(AuditEventType::Received, &request)
        .finish(&result)
        .usage
        .unwrap();
    assert_eq!(
        (usage.signal, usage.signal_name.as_deref()),
        (Some(9), Some("SIGKILL"))
    );
    result.set_signal(None);
    let json = serde_json::to_value(&result).unwrap();
    assert!(json.get("signal").is_none() && json.get("signal_name").is_none());
}

/// `received` carries the program exactly as the request had it on the wire: the same keys,
/// values and omissions (the two types declare these fields each; see `AuditEvent`), and each
/// file under the request's own path.
#[test]
fn received_carries_the_program_and_paths_as_the_request_wrote_them() {
    let mut command = ExecRequest::command("j8", vec!["sh".into(), "-c".into()]);
    command.args = vec!["echo hi".into()];
    command.files.push(FileSpec {
        path: "data/in.txt".parse().unwrap(),
        content: Payload::from("x"),
        mode: None,
    });
    for request in [ExecRequest::code("j9", "python", "print(9)"), command] {
        let sent = serde_json::to_value(&request).unwrap();
        let audited = serde_json::to_value(event(AuditEventType::Received, &request)).unwrap();
        for key in ["language", "code", "command", "args"] {
            assert_eq!(audited.get(key), sent.get(key), "{key} of {sent}");
        }
        let paths = |json: &serde_json::Value| -> Vec<serde_json::Value> {
            let files = json.get("files").and_then(|files| files.as_array());
            files
                .into_iter()
                .flatten()
                .map(|file| file["path"].clone())
                .collect()
        };
        assert_eq!(paths(&audited), paths(&sent), "{sent}");
    }
}
