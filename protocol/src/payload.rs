//! Binary-safe byte payloads (stdin, files, stdout, stderr).
//!
//! JSON form: a plain string for UTF-8 text, or `{"base64": "..."}` for arbitrary bytes.
//! Serialization picks the string form whenever the bytes are valid UTF-8.

use std::borrow::Cow;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes that travel as UTF-8 text when they can, and as base64 otherwise.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Payload(pub Vec<u8>);

impl Payload {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// The bytes as text, with invalid UTF-8 replaced.
    pub fn to_text_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }
    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({:?})", self.to_text_lossy())
    }
}

impl From<&str> for Payload {
    fn from(text: &str) -> Self {
        Self(text.as_bytes().to_vec())
    }
}

impl From<String> for Payload {
    fn from(text: String) -> Self {
        Self(text.into_bytes())
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("base64", &STANDARD.encode(&self.0))?;
                map.end()
            }
        }
    }
}

struct PayloadVisitor;

impl<'de> Visitor<'de> for PayloadVisitor {
    type Value = Payload;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a UTF-8 string or an object {\"base64\": \"...\"}")
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<Payload, E> {
        Ok(Payload(value.as_bytes().to_vec()))
    }
    fn visit_string<E: de::Error>(self, value: String) -> Result<Payload, E> {
        Ok(Payload(value.into_bytes()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Payload, A::Error> {
        let mut encoded: Option<String> = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key != "base64" {
                return Err(de::Error::unknown_field(&key, &["base64"]));
            }
            if encoded.is_some() {
                return Err(de::Error::duplicate_field("base64"));
            }
            encoded = Some(map.next_value()?);
        }
        let encoded = encoded.ok_or_else(|| de::Error::missing_field("base64"))?;
        STANDARD
            .decode(encoded.as_bytes())
            .map(Payload)
            .map_err(|error| de::Error::custom(format!("invalid base64: {error}")))
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PayloadVisitor)
    }
}

impl JsonSchema for Payload {
    fn schema_name() -> Cow<'static, str> {
        "Payload".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Bytes: a UTF-8 string, or {\"base64\": \"...\"} for arbitrary binary data.",
            "oneOf": [
                { "type": "string" },
                {
                    "type": "object",
                    "properties": { "base64": { "type": "string", "contentEncoding": "base64" } },
                    "required": ["base64"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_as_a_string() {
        let json = serde_json::to_string(&Payload::from("héllo")).unwrap();
        assert_eq!(json, "\"héllo\"");
        assert_eq!(
            serde_json::from_str::<Payload>(&json).unwrap(),
            Payload::from("héllo")
        );
    }

    #[test]
    fn binary_round_trips_as_base64() {
        let bytes = Payload(vec![0, 159, 146, 150, 255]);
        let json = serde_json::to_string(&bytes).unwrap();
        assert_eq!(json, r#"{"base64":"AJ+Slv8="}"#);
        assert_eq!(serde_json::from_str::<Payload>(&json).unwrap(), bytes);
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(serde_json::from_str::<Payload>("42").is_err());
        assert!(serde_json::from_str::<Payload>(r#"{"hex":"00"}"#).is_err());
        assert!(serde_json::from_str::<Payload>(r#"{"base64":"!!"}"#).is_err());
    }
}
