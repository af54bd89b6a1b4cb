//! Requests of the wrong shape: not JSON, not an object, wrong types, unknown fields, other
//! versions, too large, too deep, not UTF-8.

use super::*;

#[test]
fn not_json_truncated_json_and_other_top_levels() {
    refuses("print(6*7)", Want::Malformed("expected value"));
    refuses("", Want::Malformed("EOF"));
    refuses("   \n ", Want::Malformed("EOF"));
    refuses(
        r#"{"id": "job-1", "command": ["ls""#,
        Want::Malformed("EOF"),
    );
    refuses(r#"{"id": "job-1", "#, Want::Malformed("EOF"));
    refuses(
        r#"{"id": "job-1", "command": ["ls"]} trailing"#,
        Want::Malformed("trailing"),
    );
    refuses(r#"[1, 2]"#, Want::Malformed("JSON object"));
    refuses(r#""a string""#, Want::Malformed("JSON object"));
    refuses("42", Want::Malformed("JSON object"));
    refuses("null", Want::Malformed("JSON object"));
    // serde reads a struct from an array of its fields in order; the wire does not.
    let as_array = r#"[1, "job-1", null, null, ["ls"], [], null, {}, [], {}, false, null, 0]"#;
    refuses(as_array, Want::Malformed("JSON object"));
}

#[test]
fn bad_ids() {
    refuses(
        r#"{"command": ["ls"]}"#,
        Want::Malformed("missing field `id`"),
    );
    for id in ["a.b", "*", ">", "job 1", "", "jöb", "a\nb", "../x"] {
        let json = serde_json::json!({"id": id, "command": ["ls"]}).to_string();
        refuses(json, Want::Invalid("id"));
    }
    refuses(
        format!(r#"{{"id": "{}", "command": ["ls"]}}"#, "a".repeat(200)),
        Want::Invalid("id"),
    );
    let longest = format!(
        r#"{{"id": "{}", "command": ["ls"]}}"#,
        "a".repeat(MAX_TOKEN_LEN)
    );
    assert!(decode_request(longest.as_bytes(), MAX_REQUEST_BYTES).is_ok());
    refuses(r#"{"id": 5, "command": ["ls"]}"#, Want::MalformedAt("id"));
    refuses(
        r#"{"id": null, "command": ["ls"]}"#,
        Want::MalformedAt("id"),
    );
    refuses(
        r#"{"id": "a", "id": "b", "command": ["ls"]}"#,
        Want::Malformed("duplicate field `id`"),
    );
}

#[test]
fn wrong_types_name_their_field() {
    refuses(
        command_with(r#""limits": {"memory": true}"#),
        Want::MalformedAt("limits.memory"),
    );
    refuses(
        command_with(r#""limits": {"timeout": 1.5}"#),
        Want::MalformedAt("limits.timeout"),
    );
    refuses(
        command_with(r#""limits": {"processes": "many"}"#),
        Want::MalformedAt("limits.processes"),
    );
    refuses(
        command_with(r#""limits": [1]"#),
        Want::MalformedAt("limits"),
    );
    refuses(command_with(r#""args": "-a""#), Want::MalformedAt("args"));
    refuses(command_with(r#""args": null"#), Want::MalformedAt("args"));
    refuses(
        command_with(r#""args": ["-a", 5]"#),
        Want::MalformedAt("args[1]"),
    );
    refuses(
        command_with(r#""env": {"A": 1}"#),
        Want::MalformedAt("env.A"),
    );
    refuses(
        command_with(r#""env": {"A": ["x"]}"#),
        Want::MalformedAt("env.A"),
    );
    refuses(command_with(r#""env": ["A=1"]"#), Want::MalformedAt("env"));
    refuses(command_with(r#""stdin": 5"#), Want::MalformedAt("stdin"));
    refuses(
        command_with(r#""stdin": ["x"]"#),
        Want::MalformedAt("stdin"),
    );
    refuses(
        command_with(r#""network": "yes""#),
        Want::MalformedAt("network"),
    );
    refuses(
        command_with(r#""priority": 1.5"#),
        Want::MalformedAt("priority"),
    );
    refuses(
        command_with(r#""priority": 10000000000"#),
        Want::MalformedAt("priority"),
    );
    refuses(
        command_with(r#""deadline": "tomorrow""#),
        Want::MalformedAt("deadline"),
    );
    refuses(
        r#"{"id": "job-1", "command": "ls -l"}"#,
        Want::MalformedAt("command"),
    );
    refuses(
        r#"{"id": "job-1", "language": 3, "code": "x"}"#,
        Want::MalformedAt("language"),
    );
    refuses(
        command_with(r#""files": [{"path": "a", "content": "x", "mode": "0755"}]"#),
        Want::MalformedAt("files[0].mode"),
    );
    refuses(
        command_with(r#""files": [{"path": "a", "content": "x"}, {"path": 7, "content": "y"}]"#),
        Want::MalformedAt("files[1].path"),
    );
    refuses(
        command_with(r#""files": [{"path": "a"}]"#),
        Want::MalformedAt("files[0]"),
    );
    refuses(
        command_with(r#""files": {"path": "a"}"#),
        Want::MalformedAt("files"),
    );
}

#[test]
fn fields_are_named_in_pretty_printed_requests_too() {
    let pretty = "{\r\n  \"id\": \"j\",\n  \"command\": [\n    \"ls\"\n  ],\n  \"limits\": {\n    \"timeout\": \"30s\",\n    \"memory\": true\n  }\n}\n";
    refuses(pretty, Want::MalformedAt("limits.memory"));
    let pretty = "{\n  \"id\": \"j\",\n  \"command\": [\"ls\"],\n  \"files\": [\n    {\"path\": \"a\", \"content\": \"\"},\n    {\"path\": \"b\", \"content\": 5}\n  ]\n}";
    refuses(pretty, Want::MalformedAt("files[1].content"));
}

#[test]
fn unknown_fields_are_refused_where_they_are() {
    refuses(
        command_with(r#""sandbox": "off""#),
        Want::MalformedAt("sandbox"),
    );
    refuses(
        command_with(r#""tenant": "other""#),
        Want::MalformedAt("tenant"),
    );
    refuses(
        command_with(r#""limits": {"swap": "1g"}"#),
        Want::MalformedAt("limits.swap"),
    );
    let error = refuses(
        command_with(r#""files": [{"path": "a", "content": "", "owner": "root"}]"#),
        Want::MalformedAt("files[0].owner"),
    );
    assert!(
        error.to_string().contains("unknown field `owner`"),
        "{error}"
    );
    refuses(
        command_with(r#""stdin": {"hex": "00"}"#),
        Want::MalformedAt("stdin.hex"),
    );
    refuses(
        command_with(r#""stdin": {"base64": "AA==", "extra": 1}"#),
        Want::MalformedAt("stdin.extra"),
    );
}

#[test]
fn versions_other_than_one_are_unsupported() {
    refuses(command_with(r#""version": 2"#), Want::Version(2));
    refuses(command_with(r#""version": 0"#), Want::Version(0));
    // A newer request with fields this version does not know is still a version error.
    refuses(
        command_with(r#""version": 2, "sandbox": {"gpu": true}"#),
        Want::Version(2),
    );
    refuses(
        command_with(r#""version": "1""#),
        Want::MalformedAt("version"),
    );
    refuses(
        command_with(r#""version": -1"#),
        Want::MalformedAt("version"),
    );
    let one = decode_request(
        command_with(r#""version": 1"#).as_bytes(),
        MAX_REQUEST_BYTES,
    )
    .unwrap();
    let absent = decode_request(
        command_with(r#""priority": 0"#).as_bytes(),
        MAX_REQUEST_BYTES,
    )
    .unwrap();
    assert_eq!(one, absent);
}

#[test]
fn oversized_requests_are_payload_too_large() {
    let big = command_with(&format!(r#""stdin": "{}""#, "x".repeat(MAX_REQUEST_BYTES)));
    refuses(&big, Want::TooLarge);
    // The worker's own maximum applies when lower, and never raises the protocol's.
    let small = command_with(r#""stdin": "hello""#);
    refuses_with_max(small.as_bytes(), 16, Want::TooLarge);
    refuses_with_max(big.as_bytes(), usize::MAX, Want::TooLarge);
    let exactly = format!("{}{}", small, " ".repeat(MAX_REQUEST_BYTES - small.len()));
    assert!(decode_request(exactly.as_bytes(), MAX_REQUEST_BYTES).is_ok());
    refuses(format!("{exactly} "), Want::TooLarge);
}

#[test]
fn payloads_must_be_text_or_valid_base64() {
    refuses(
        command_with(r#""stdin": {"base64": "!!!!"}"#),
        Want::MalformedAt("stdin"),
    );
    refuses(
        command_with(r#""stdin": {"base64": "AAE"}"#),
        Want::MalformedAt("stdin"),
    );
    refuses(command_with(r#""stdin": {}"#), Want::MalformedAt("stdin"));
    refuses(
        command_with(r#""files": [{"path": "a", "content": {"base64": "not base64"}}]"#),
        Want::MalformedAt("files[0].content"),
    );
    let ok = command_with(r#""stdin": {"base64": "AP8="}"#);
    let request = decode_request(ok.as_bytes(), MAX_REQUEST_BYTES).unwrap();
    assert_eq!(request.stdin, Some(Payload(vec![0, 255])));
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep = "[".repeat(100_000);
    refuses(&deep, Want::Malformed("JSON object"));
    let hostile = [
        format!(r#"{{"id": {deep}"#),
        format!(r#"{{"id": "j", "command": ["ls"], "env": {{"A": {deep}}}}}"#),
        format!(r#"{{"id": "j", "command": ["ls"], "unknown": {deep}}}"#),
        format!(
            r#"{{"id": "j", "command": ["ls"], "stdin": {}"#,
            r#"{"base64": "#.repeat(50_000)
        ),
        format!(r#"{{"id": "j", "command": {}"#, "[".repeat(200)) + &"]".repeat(200) + "}",
    ];
    // A small stack, as a worker's task might have: recursion would overflow it.
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            for json in &hostile {
                let error = decode_request(json.as_bytes(), MAX_REQUEST_BYTES).unwrap_err();
                assert_eq!(error.kind(), ErrorKind::InvalidRequest);
                assert_eq!(salvage_id(json.as_bytes()), None);
            }
        })
        .unwrap();
    handle.join().unwrap();
    refuses(format!(r#"{{"id": {deep}"#), Want::MalformedAt("id"));
    let nested_id = format!(r#"{{"x": {deep}, "id": "job-1"}}"#);
    assert_eq!(salvage_id(nested_id.as_bytes()), None);
}

#[test]
fn invalid_utf8_is_refused() {
    let mut bytes = br#"{"id": "job-1", "command": ["ls", ""#.to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, b'"', b']', b'}']);
    refuses(&bytes, Want::MalformedAt("command[1]"));
    refuses([0xff, 0xfe, b'{', b'}'], Want::Malformed("expected value"));
    let mut overlong = br#"{"id": "job-1", "command": ["ls"], "stdin": ""#.to_vec();
    overlong.extend_from_slice(&[0xc0, 0xaf, b'"', b'}']);
    refuses(&overlong, Want::MalformedAt("stdin"));
    // A lone surrogate escape is not a character either.
    refuses(
        command_with(r#""stdin": "\ud800""#),
        Want::MalformedAt("stdin"),
    );
}

#[test]
fn null_means_absent_for_optional_fields() {
    let json = r#"{"id": "j", "command": ["ls"], "language": null, "code": null, "stdin": null,
        "deadline": null, "limits": {"timeout": null, "memory": null}}"#;
    let request = decode_request(json.as_bytes(), MAX_REQUEST_BYTES).unwrap();
    assert_eq!(request, ExecRequest::command("j", vec!["ls".into()]));
    refuses(
        command_with(r#""limits": null"#),
        Want::MalformedAt("limits"),
    );
    refuses(command_with(r#""env": null"#), Want::MalformedAt("env"));
}

#[test]
fn hostile_field_names_cannot_blow_up_the_reply() {
    let huge = "k".repeat(900_000);
    let cases = [
        (command_with(&format!(r#""{huge}": 1"#)), "unknown field"),
        (
            command_with(&format!(r#""limits": {{"{huge}": 1}}"#)),
            "unknown field",
        ),
        (
            command_with(&format!(r#""env": {{"{huge}": 1}}"#)),
            "invalid type",
        ),
        (
            command_with(&format!(r#""env": {{"1{huge}": "x"}}"#)),
            "variable names",
        ),
        (
            format!(r#"{{"id": "j", "language": "{huge}", "code": "1"}}"#),
            "not a language",
        ),
        (
            command_with(&format!(r#""limits": {{"memory": "{huge}"}}"#)),
            "not a size",
        ),
    ];
    for (json, says) in cases {
        let error = decode_request(json.as_bytes(), MAX_REQUEST_BYTES).unwrap_err();
        let info = error.to_info();
        assert_eq!(info.kind, ErrorKind::InvalidRequest);
        assert!(info.message.contains(says), "{}", &info.message[..200]);
        assert!(
            info.message.len() <= MAX_ERROR_MESSAGE_BYTES + 100,
            "a {}-byte message",
            info.message.len()
        );
        if let DecodeError::Invalid { field, .. } = &error {
            assert!(field.len() <= 200, "a {}-byte field", field.len());
        }
    }
}
