//! W3C trace context: the `traceparent` a request brings, checked once.
//!
//! A request carries it in the NATS header of that name, or (for clients that cannot set
//! headers) in its `traceparent` field; the header wins. A malformed one is never a reason to
//! refuse a job: whoever reads it ignores it, so every [`Traceparent`] held is a valid one.

use std::fmt;

/// The NATS header, and the request field, that carry a W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Most characters of a malformed value an [`InvalidTraceparent`] keeps, for a log line.
const MAX_SHOWN_CHARS: usize = 80;

/// A W3C trace context `traceparent` of version `00`:
/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lowercase, neither id all zeros.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Traceparent(String);

/// Why a value is not a [`Traceparent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown:?} is not a W3C traceparent: want 00-<32 hex>-<16 hex>-<2 hex>")]
pub struct InvalidTraceparent {
    /// The start of the value, at most 80 characters (a request's field can be long).
    pub shown: String,
}

impl Traceparent {
    /// `value` checked, or why it is not a version-`00` traceparent.
    pub fn parse(value: &str) -> Result<Self, InvalidTraceparent> {
        if is_valid(value) {
            return Ok(Self(value.to_string()));
        }
        Err(InvalidTraceparent {
            shown: value.chars().take(MAX_SHOWN_CHARS).collect(),
        })
    }

    /// The trace context as it travels.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trace context's text, given up.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The [`TRACEPARENT_HEADER`] of a NATS message, checked; `None` without one.
    #[cfg(feature = "client")]
    pub fn from_headers(
        headers: Option<&async_nats::HeaderMap>,
    ) -> Option<Result<Self, InvalidTraceparent>> {
        let value = headers?.get(TRACEPARENT_HEADER)?;
        Some(Self::parse(value.as_str()))
    }

    /// The `traceparent` field of a raw request, checked, read without decoding (or requiring)
    /// the rest of it; `None` when the bytes are not a JSON object with a string there.
    pub fn from_request_bytes(raw: &[u8]) -> Option<Result<Self, InvalidTraceparent>> {
        #[derive(serde::Deserialize)]
        struct Trace {
            traceparent: Option<String>,
        }
        let field = serde_json::from_slice::<Trace>(raw).ok()?.traceparent?;
        Some(Self::parse(&field))
    }
}

/// The version-`00` format: four `-`-separated lowercase hex parts of 2, 32, 16 and 2 digits.
fn is_valid(value: &str) -> bool {
    let hex = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |part: &str| part.bytes().any(|b| b != b'0');
    let parts: Vec<&str> = value.split('-').collect();
    match parts.as_slice() {
        ["00", trace_id, parent_id, flags] => {
            hex(trace_id, 32)
                && hex(parent_id, 16)
                && hex(flags, 2)
                && nonzero(trace_id)
                && nonzero(parent_id)
        }
        _ => false,
    }
}

impl fmt::Display for Traceparent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Traceparent {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Traceparent> for String {
    fn from(traceparent: Traceparent) -> String {
        traceparent.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparents_follow_the_w3c_version_00_format() {
        assert_eq!(Traceparent::parse(VALID).unwrap().as_str(), VALID);
        assert!(
            Traceparent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").is_ok()
        );
        for bad in [
            "",
            "00",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902g7-01",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(Traceparent::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn an_invalid_value_keeps_only_its_start() {
        let long = "x".repeat(10_000);
        let invalid = Traceparent::parse(&long).unwrap_err();
        assert_eq!(invalid.shown.chars().count(), MAX_SHOWN_CHARS);
        assert!(invalid.to_string().contains("want 00-"), "{invalid}");
    }

    #[test]
    fn the_request_field_is_read_from_raw_bytes_without_decoding_the_rest() {
        let raw = format!(r#"{{"traceparent":"{VALID}","command":5,"future":true}}"#);
        let found = Traceparent::from_request_bytes(raw.as_bytes());
        assert_eq!(found.unwrap().unwrap().as_str(), VALID);
        let bad = Traceparent::from_request_bytes(br#"{"traceparent":"00-1"}"#);
        assert!(bad.unwrap().is_err());
        for none in [
            &br#"{"id":"a"}"#[..],
            br#"{"traceparent":null}"#,
            b"not json",
        ] {
            assert!(Traceparent::from_request_bytes(none).is_none());
        }
    }

    #[cfg(feature = "client")]
    #[test]
    fn the_header_is_read_from_a_nats_header_map() {
        let mut headers = async_nats::HeaderMap::new();
        assert!(Traceparent::from_headers(Some(&headers)).is_none());
        assert!(Traceparent::from_headers(None).is_none());
        headers.insert(TRACEPARENT_HEADER, VALID);
        let found = Traceparent::from_headers(Some(&headers)).unwrap().unwrap();
        assert_eq!(found.as_str(), VALID);
    }
}
