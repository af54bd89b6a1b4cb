//! The execution request an agent publishes on `<prefix>.exec.<pool>.<tenant>`.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use crate::PROTOCOL_VERSION;
use crate::egress::NetworkAccess;
use crate::limits::Limits;
use crate::outputs::OutputPattern;
use crate::path::RelativePath;
use crate::payload::Payload;

fn protocol_version() -> u32 {
    PROTOCOL_VERSION
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &i32) -> bool {
    *value == 0
}

/// A request to run code or a command in a sandbox.
///
/// Exactly one of `language` + `code` or `command` is given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Protocol version; must be 1.
    #[serde(default = "protocol_version")]
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    /// Client-chosen job id and idempotency key: 1 to 128 of `A-Z a-z 0-9 _ -`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,128}$"))]
    pub id: String,
    /// Language of `code`, e.g. `python`, `node`, `bash`; the pool maps it to a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9_+.-]{1,32}$"))]
    pub language: Option<String>,
    /// Source code to run with `language`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// An explicit argv to run instead of `language` + `code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Extra arguments passed to the program.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Bytes written to the program's standard input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<Payload>,
    /// Environment variables; the sandbox environment starts empty apart from PATH and HOME.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Files placed in the working directory before the program starts.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub files: Vec<FileSpec>,
    /// Files to return after the job: paths or globs relative to the working directory
    /// (`out/*.png`, `report.csv`, `**/*.log`); see [`crate::outputs`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputPattern>,
    /// Resource limits; the pool's defaults fill the rest, its ceilings bound them.
    #[serde(default, deserialize_with = "object")]
    pub limits: Limits,
    /// Ask for network access: `true` for all the pool's egress rules, or a list of rules each
    /// within one of the pool's (`["pypi.org:443"]`); refused unless the pool allows it.
    #[serde(default, skip_serializing_if = "NetworkAccess::is_none")]
    pub network: NetworkAccess,
    /// Publish stdout and stderr while the job runs, as [`crate::OutputChunk`]s on
    /// `<prefix>.output.<tenant>.<id>`, before the result; the result is the same either way.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stream: bool,
    /// Do not start the job after this instant (RFC 3339); verdict `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// Higher runs first among queued jobs, from -100 to 100.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = -100, max = 100))]
    pub priority: i32,
    /// W3C trace context `traceparent`, for clients that cannot set the NATS header of that
    /// name (the header wins). A malformed one is ignored, never a reason to refuse the job.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_text"
    )]
    pub traceparent: Option<String>,
}

/// Reads any JSON value as text (a string as itself, anything else as its JSON), so a field
/// that is only advisory never fails a request's decoding.
fn lenient_text<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    Ok(value.map(|value| match value {
        serde_json::Value::String(text) => text,
        other => other.to_string(),
    }))
}

/// A file to place in the job's working directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Relative path inside the working directory; no `..`, no leading `/`.
    pub path: RelativePath,
    /// File contents.
    pub content: Payload,
    /// Unix permission bits, e.g. 493 (0o755); default 0o644.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 0o777))]
    pub mode: Option<u32>,
}

impl ExecRequest {
    /// A request that runs `code` in `language`.
    pub fn code(
        id: impl Into<String>,
        language: impl Into<String>,
        code: impl Into<String>,
    ) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            id: id.into(),
            language: Some(language.into()),
            code: Some(code.into()),
            ..Self::default()
        }
    }

    /// A request that runs an explicit argv.
    pub fn command(id: impl Into<String>, argv: Vec<String>) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            id: id.into(),
            command: Some(argv),
            ..Self::default()
        }
    }

    /// Hex SHA-256 of what runs: the UTF-8 `code`, or for a command the argv joined by NUL bytes.
    pub fn source_sha256(&self) -> String {
        match (&self.code, &self.command) {
            (Some(code), _) => sha256_hex(code.as_bytes()),
            (None, Some(argv)) => sha256_hex(argv.join("\0").as_bytes()),
            (None, None) => sha256_hex(b""),
        }
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Reads a `T` from a JSON object only. serde's derive also reads a struct from an array of its
/// fields in order (`"limits": ["30s"]`), a form the wire does not have.
pub(crate) fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ObjectVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map))
        }
    }

    deserializer.deserialize_map(ObjectVisitor(PhantomData))
}

/// Reads a list of `T`, each from a JSON object only (see [`object`]).
fn objects<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Object<T>(T);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            object(deserializer).map(Object)
        }
    }

    let items = Vec::<Object<T>>::deserialize(deserializer)?;
    Ok(items.into_iter().map(|Object(item)| item).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_field_of_any_shape_decodes_and_only_a_string_keeps_its_text() {
        let parse = |json: &str| serde_json::from_str::<ExecRequest>(json).map(|r| r.traceparent);
        let with = format!(r#"{{"id":"a","command":["ls"],"traceparent":"{VALID}"}}"#);
        assert_eq!(parse(&with).unwrap().as_deref(), Some(VALID));
        assert_eq!(
            parse(r#"{"id":"a","command":["ls"],"traceparent":12}"#)
                .unwrap()
                .as_deref(),
            Some("12")
        );
        assert_eq!(
            parse(r#"{"id":"a","command":["ls"],"traceparent":null}"#).unwrap(),
            None
        );
        assert_eq!(parse(r#"{"id":"a","command":["ls"]}"#).unwrap(), None);
    }
}
