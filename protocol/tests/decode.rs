//! The request decoder against malformed and hostile input: every refusal has the right
//! variant and wire kind and names the offending field; nothing panics or overflows the stack;
//! and every valid request survives a round trip.

// Integration tests are test code: lets clippy.toml's allow-unwrap-in-tests see it.
#![cfg(test)]

use openshell_protocol::decode::{
    self, DecodeError, MAX_ARGV, MAX_CPUS, MAX_ENV_VARS, MAX_ERROR_MESSAGE_BYTES, MAX_FILES,
    MAX_LANGUAGE_LEN, MAX_PATH_BYTES, MAX_REQUEST_BYTES, PRIORITY_RANGE, decode_request,
    salvage_id,
};
use openshell_protocol::subjects::MAX_TOKEN_LEN;
use openshell_protocol::{ByteSize, DurationMs, ErrorKind, ExecRequest, FileSpec, Limits, Payload};

/// What a bad request must be refused with.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// `Malformed`, its message saying `at `field``.
    MalformedAt(&'static str),
    /// `Malformed`, its message containing this text (for errors outside any field).
    Malformed(&'static str),
    /// `Invalid` for exactly this field, named in the message.
    Invalid(&'static str),
    /// `UnsupportedVersion` for this version.
    Version(u32),
    /// `TooLarge`.
    TooLarge,
}

/// Decodes `bytes` with the largest allowed size and checks the refusal against `want`.
#[track_caller]
fn refuses(bytes: impl AsRef<[u8]>, want: Want) -> DecodeError {
    refuses_with_max(bytes.as_ref(), MAX_REQUEST_BYTES, want)
}

#[track_caller]
fn refuses_with_max(bytes: &[u8], max: usize, want: Want) -> DecodeError {
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
    let error = match decode_request(bytes, max) {
        Ok(request) => panic!("accepted {shown}: {request:?}"),
        Err(error) => error,
    };
    let message = error.to_string();
    let info = error.to_info();
    assert_eq!(info.kind, error.kind());
    assert_eq!(info.message, message);
    match (want, &error) {
        (Want::MalformedAt(field), DecodeError::Malformed { .. }) => {
            assert_eq!(error.kind(), ErrorKind::InvalidRequest);
            let at = format!("at `{field}`:");
            assert!(
                message.contains(&at),
                "{shown}\n  {message}\n  does not say {at}"
            );
        }
        (Want::Malformed(text), DecodeError::Malformed { .. }) => {
            assert_eq!(error.kind(), ErrorKind::InvalidRequest);
            assert!(
                message.contains(text),
                "{shown}\n  {message}\n  does not say {text}"
            );
        }
        (Want::Invalid(want_field), DecodeError::Invalid { field, .. }) => {
            assert_eq!(error.kind(), ErrorKind::InvalidRequest);
            assert_eq!(field, want_field, "{shown}: {message}");
            let named = format!("`{want_field}`");
            assert!(
                message.contains(&named),
                "{shown}\n  {message}\n  does not name {named}"
            );
        }
        (Want::Version(want_version), DecodeError::UnsupportedVersion { version }) => {
            assert_eq!(error.kind(), ErrorKind::UnsupportedVersion);
            assert_eq!(*version, want_version);
            assert!(message.contains("version"), "{message}");
        }
        (Want::TooLarge, DecodeError::TooLarge { size, max: limit }) => {
            assert_eq!(error.kind(), ErrorKind::PayloadTooLarge);
            assert_eq!(*size, bytes.len());
            assert!(size > limit && *limit <= MAX_REQUEST_BYTES);
            assert!(message.contains(&size.to_string()), "{message}");
        }
        (want, _) => panic!("{shown}\n  wanted {want:?}, got {error:?}"),
    }
    error
}

/// A valid command request with `extra` (`"key": value, ...`) added to its fields.
fn command_with(extra: &str) -> String {
    format!(r#"{{"id": "job-1", "command": ["ls", "-l"], {extra}}}"#)
}

/// A valid code request with `extra` added to its fields.
fn code_with(extra: &str) -> String {
    format!(r#"{{"id": "job-1", "language": "python", "code": "print(1)", {extra}}}"#)
}

// The cases, by kind; `decode/` is not a test crate of its own.
#[path = "decode/properties.rs"]
mod properties;
#[path = "decode/rules.rs"]
mod rules;
#[path = "decode/shape.rs"]
mod shape;

#[test]
fn the_base_requests_are_valid() {
    let request = decode_request(
        command_with(r#""priority": 0"#).as_bytes(),
        MAX_REQUEST_BYTES,
    );
    assert!(request.is_ok(), "{request:?}");
    let request = decode_request(
        code_with(r#""network": false"#).as_bytes(),
        MAX_REQUEST_BYTES,
    );
    assert!(request.is_ok(), "{request:?}");
}

#[test]
fn salvage_id_names_requests_that_fail() {
    let cases = [
        r#"{"id": "job-9", "command": []}"#,
        r#"{"id": "job-9", "limits": {"memory": "12q"}}"#,
        r#"{"version": 7, "id": "job-9", "future": true}"#,
        r#"{"id": "job-9", "command": ["ls"], "priority": 1000}"#,
    ];
    for json in cases {
        assert!(
            decode_request(json.as_bytes(), MAX_REQUEST_BYTES).is_err(),
            "{json}"
        );
        assert_eq!(
            salvage_id(json.as_bytes()).as_deref(),
            Some("job-9"),
            "{json}"
        );
    }
    let oversized = command_with(&format!(r#""stdin": "{}""#, "x".repeat(MAX_REQUEST_BYTES)));
    let garbage: [&[u8]; 10] = [
        b"",
        b"not json",
        &[0xff, 0xfe, 0x00],
        br#"[{"id": "job-9"}]"#,
        br#"{"id": 9}"#,
        br#"{"id": "a.b"}"#,
        br#"{"id": "job-9", "command": ["ls""#,
        br#"{"id": ""}"#,
        br#"{"job": {"id": "job-9"}}"#,
        oversized.as_bytes(),
    ];
    for bytes in garbage {
        assert_eq!(
            salvage_id(bytes),
            None,
            "{}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
        );
    }
}

/// The README's table of input limits shows the constants' real values.
#[test]
fn readme_limits_table_matches_the_constants() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let row = |name: &str| -> String {
        let prefix = format!("| `{name}` | ");
        let line = readme
            .lines()
            .find(|line| line.starts_with(&prefix))
            .unwrap_or_else(|| panic!("README.md's input limits table has no row for {name}"));
        let value = line[prefix.len()..].split(" |").next().unwrap_or_default();
        value
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let counts = [
        ("MAX_REQUEST_BYTES", MAX_REQUEST_BYTES),
        ("MAX_TOKEN_LEN", MAX_TOKEN_LEN),
        ("MAX_ARGV", MAX_ARGV),
        ("MAX_ENV_VARS", MAX_ENV_VARS),
        ("MAX_FILES", MAX_FILES),
        ("MAX_PATH_BYTES", MAX_PATH_BYTES),
        ("MAX_LANGUAGE_LEN", MAX_LANGUAGE_LEN),
    ];
    for (name, value) in counts {
        assert_eq!(row(name), value.to_string(), "README.md's {name}");
    }
    assert_eq!(row("PRIORITY_RANGE"), format!("{PRIORITY_RANGE:?}"));
    assert_eq!(row("MAX_CPUS").parse::<f64>().ok(), Some(MAX_CPUS));
}
