//! Sizes and durations as operators write them: `512m`, `1g`, `30s`, `500ms`.
//!
//! On the wire a size is either a byte count (integer) or a string with a unit (`k`, `m`,
//! `g`, `t`, powers of 1024, optional `b`/`ib` suffix); a duration is either milliseconds
//! (integer) or a string with a unit (`ms`, `s`, `m`, `h`, combinable as `1m30s`).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a size or duration string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The text is not a size such as `512m`, `1g` or `1048576`.
    #[error("`{0}` is not a size: write a byte count or a number with k, m, g or t (e.g. 512m)")]
    BadSize(String),
    /// The text is not a duration such as `30s` or `500ms`.
    #[error("`{0}` is not a duration: write a number with ms, s, m or h (e.g. 30s, 500ms)")]
    BadDuration(String),
}

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` KiB.
    pub const fn kib(n: u64) -> Self {
        Self(n * 1024)
    }
    /// `n` MiB.
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }
    /// `n` GiB.
    pub const fn gib(n: u64) -> Self {
        Self(n * 1024 * 1024 * 1024)
    }
    /// The byte count.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;
    fn from_str(text: &str) -> Result<Self, UnitError> {
        let bad = || UnitError::BadSize(text.to_string());
        let lower = text.trim().to_ascii_lowercase();
        let split = lower
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(lower.len());
        let (number, unit) = lower.split_at(split);
        let unit = unit.trim();
        let unit = unit
            .strip_suffix("ib")
            .or_else(|| unit.strip_suffix('b'))
            .unwrap_or(unit);
        let multiplier: u64 = match unit {
            "" => 1,
            "k" => 1 << 10,
            "m" => 1 << 20,
            "g" => 1 << 30,
            "t" => 1 << 40,
            _ => return Err(bad()),
        };
        if number.is_empty() {
            return Err(bad());
        }
        if let Ok(whole) = number.parse::<u64>() {
            return whole.checked_mul(multiplier).map(ByteSize).ok_or_else(bad);
        }
        let fractional: f64 = number.parse().map_err(|_| bad())?;
        let bytes = fractional * multiplier as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(bad());
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "t"),
            (1 << 30, "g"),
            (1 << 20, "m"),
            (1 << 10, "k"),
        ];
        for (size, unit) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// A duration with millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DurationMs(pub u64);

impl DurationMs {
    /// `n` seconds.
    pub const fn secs(n: u64) -> Self {
        Self(n * 1000)
    }
    /// The std duration.
    pub const fn as_duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
    /// Whole milliseconds.
    pub const fn millis(self) -> u64 {
        self.0
    }
    /// Parses an operator's duration where a bare number means seconds (`SSH_TIMEOUT=30`).
    pub fn parse_seconds_default(text: &str) -> Result<Self, UnitError> {
        match text.trim().parse::<u64>() {
            Ok(seconds) => Ok(Self::secs(seconds)),
            Err(_) => text.parse(),
        }
    }
}

impl From<Duration> for DurationMs {
    fn from(duration: Duration) -> Self {
        Self(duration.as_millis().min(u64::MAX as u128) as u64)
    }
}

impl FromStr for DurationMs {
    type Err = UnitError;
    fn from_str(text: &str) -> Result<Self, UnitError> {
        let trimmed = text.trim();
        if let Ok(millis) = trimmed.parse::<u64>() {
            return Ok(Self(millis));
        }
        humantime::parse_duration(trimmed)
            .map(Self::from)
            .map_err(|_| UnitError::BadDuration(text.to_string()))
    }
}

impl fmt::Display for DurationMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => write!(f, "0s"),
            ms if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
            ms if ms % 60_000 == 0 => write!(f, "{}m", ms / 60_000),
            ms if ms % 1000 == 0 => write!(f, "{}s", ms / 1000),
            ms => write!(f, "{ms}ms"),
        }
    }
}

/// Serde visitor accepting an unsigned integer or a string parsed with `FromStr`.
struct NumberOrText<T>(&'static str, std::marker::PhantomData<T>);

impl<T> Visitor<'_> for NumberOrText<T>
where
    T: FromStr<Err = UnitError> + From<u64>,
{
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        Ok(T::from(value))
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        u64::try_from(value)
            .map(T::from)
            .map_err(|_| E::custom(format!("{value} is negative; {} cannot be", self.0)))
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        value.parse().map_err(E::custom)
    }
}

impl From<u64> for ByteSize {
    fn from(bytes: u64) -> Self {
        Self(bytes)
    }
}

impl From<u64> for DurationMs {
    fn from(millis: u64) -> Self {
        Self(millis)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NumberOrText(
            "a byte count or a size such as \"512m\"",
            std::marker::PhantomData,
        ))
    }
}

impl<'de> Deserialize<'de> for DurationMs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NumberOrText(
            "milliseconds or a duration such as \"30s\"",
            std::marker::PhantomData,
        ))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl Serialize for DurationMs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Bytes: an integer, or a string with a unit k, m, g or t (powers of 1024), e.g. \"512m\".",
            "oneOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*([kKmMgGtT]([iI]?[bB])?|[bB])?\\s*$" }
            ]
        })
    }
}

impl JsonSchema for DurationMs {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: integer milliseconds, or a string with units ms, s, m, h, e.g. \"30s\", \"500ms\", \"1m30s\".",
            "oneOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "minLength": 1 }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_the_seed_style() {
        assert_eq!("512m".parse(), Ok(ByteSize::mib(512)));
        assert_eq!("1g".parse(), Ok(ByteSize::gib(1)));
        assert_eq!("1GiB".parse(), Ok(ByteSize::gib(1)));
        assert_eq!("64k".parse(), Ok(ByteSize::kib(64)));
        assert_eq!("1.5k".parse(), Ok(ByteSize(1536)));
        assert_eq!("1048576".parse(), Ok(ByteSize::mib(1)));
        assert!("12q".parse::<ByteSize>().is_err());
        assert!("m".parse::<ByteSize>().is_err());
        assert!("99999999999t".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize::mib(512).to_string(), "512m");
    }

    #[test]
    fn durations_in_the_seed_style() {
        assert_eq!("30s".parse(), Ok(DurationMs::secs(30)));
        assert_eq!("500ms".parse(), Ok(DurationMs(500)));
        assert_eq!("1m30s".parse(), Ok(DurationMs(90_000)));
        assert_eq!("250".parse(), Ok(DurationMs(250)));
        assert_eq!(
            DurationMs::parse_seconds_default("30"),
            Ok(DurationMs::secs(30))
        );
        assert!("soon".parse::<DurationMs>().is_err());
        assert_eq!(DurationMs(90_000).to_string(), "90s");
    }

    #[test]
    fn json_accepts_numbers_and_strings() {
        let size: ByteSize = serde_json::from_str("\"2m\"").unwrap();
        assert_eq!(size, ByteSize::mib(2));
        let size: ByteSize = serde_json::from_str("4096").unwrap();
        assert_eq!(size, ByteSize(4096));
        assert!(serde_json::from_str::<ByteSize>("-1").is_err());
        assert!(serde_json::from_str::<ByteSize>("true").is_err());
        let duration: DurationMs = serde_json::from_str("\"2s\"").unwrap();
        assert_eq!(duration, DurationMs(2000));
    }
}
