//! File paths inside a job's working directory, checked once where they enter.
//!
//! A [`RelativePath`] can only be made by [`RelativePath::parse`] (or by deserializing, which
//! parses), so code that holds one never checks it again: it names a file strictly inside the
//! working directory, in one spelling (`a/b`, never `./a//b`).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest file path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// Why text is not a [`RelativePath`]. The messages are the decoder's, which quotes them for
/// the field (`files[2].path`) they came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Empty, or longer than [`MAX_PATH_BYTES`].
    #[error("must be 1 to {MAX_PATH_BYTES} bytes")]
    Length {
        /// The path's length in bytes.
        bytes: usize,
    },
    /// Starts with `/`, or holds a NUL byte or a backslash.
    #[error("`{path}` must be a relative path without NUL or backslash")]
    NotRelative {
        /// The path.
        path: String,
    },
    /// Has an empty (`a//b`, `a/`), `.` or `..` part.
    #[error("`{path}` must not contain empty, `.` or `..` parts")]
    Part {
        /// The path.
        path: String,
    },
}

/// A path relative to a job's working directory: 1 to [`MAX_PATH_BYTES`] bytes of
/// `/`-separated parts, none empty, `.` or `..`; no leading `/`, no NUL, no backslash.
/// On the wire it is the plain string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelativePath(String);

impl RelativePath {
    /// `path` checked, or why it is not a relative path inside the working directory.
    pub fn parse(path: &str) -> Result<Self, PathError> {
        check(path)?;
        Ok(Self(path.to_string()))
    }

    /// The path as text, `/`-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path's text, given up.
    pub fn into_string(self) -> String {
        self.0
    }

    /// Its parts, outermost first: `a`, `b`, `c` for `a/b/c`.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The directories it needs, outermost first: `a`, `a/b` for `a/b/c`; none for `c`.
    pub fn directories(&self) -> impl Iterator<Item = &str> {
        self.0.match_indices('/').map(|(at, _)| &self.0[..at])
    }
}

/// The rules of [`RelativePath`], in the order the decoder has always applied them.
fn check(path: &str) -> Result<(), PathError> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES {
        return Err(PathError::Length { bytes: path.len() });
    }
    if path.starts_with('/') || path.contains('\0') || path.contains('\\') {
        return Err(PathError::NotRelative {
            path: path.to_string(),
        });
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(PathError::Part {
            path: path.to_string(),
        });
    }
    Ok(())
}

impl TryFrom<String> for RelativePath {
    type Error = PathError;
    fn try_from(path: String) -> Result<Self, PathError> {
        check(&path)?;
        Ok(Self(path))
    }
}

impl FromStr for RelativePath {
    type Err = PathError;
    fn from_str(path: &str) -> Result<Self, PathError> {
        Self::parse(path)
    }
}

impl fmt::Display for RelativePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RelativePath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::path::Path> for RelativePath {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }
}

impl PartialEq<str> for RelativePath {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for RelativePath {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl Serialize for RelativePath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Refuses the path while the deserializer still stands just after it, so serde_json's error
/// points at the path itself (the decoder names the field from that position).
struct PathVisitor;

impl Visitor<'_> for PathVisitor {
    type Value = RelativePath;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a relative file path")
    }
    fn visit_str<E: de::Error>(self, path: &str) -> Result<RelativePath, E> {
        RelativePath::parse(path).map_err(E::custom)
    }
    fn visit_string<E: de::Error>(self, path: String) -> Result<RelativePath, E> {
        RelativePath::try_from(path).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for RelativePath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_string(PathVisitor)
    }
}

/// A plain string, as before the type existed: the rules are in the field's description.
impl JsonSchema for RelativePath {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "RelativePath".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        String::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_parse_once_and_keep_their_text() {
        for good in ["a", "a/b/c.txt", "lib/.hidden/..a", "...", "a b/ü"] {
            let path = RelativePath::parse(good).unwrap();
            assert_eq!(path.as_str(), good);
            assert_eq!(path.to_string(), good);
            assert_eq!(serde_json::to_value(&path).unwrap(), good);
        }
        let path = RelativePath::parse("a/b/c").unwrap();
        assert_eq!(path.components().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(path.directories().collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(RelativePath::parse("c").unwrap().directories().count(), 0);
    }

    #[test]
    fn paths_that_leave_the_directory_are_refused_with_the_decoders_messages() {
        let refused = |path: &str| RelativePath::parse(path).unwrap_err();
        assert_eq!(refused(""), PathError::Length { bytes: 0 });
        let long = "a".repeat(MAX_PATH_BYTES + 1);
        assert_eq!(refused(&long).to_string(), "must be 1 to 1024 bytes");
        assert!(RelativePath::parse(&"a".repeat(MAX_PATH_BYTES)).is_ok());
        for path in ["/etc/passwd", "a\\b", "a\0b"] {
            assert_eq!(
                refused(path).to_string(),
                format!("`{path}` must be a relative path without NUL or backslash")
            );
        }
        for path in ["..", ".", "./a", "a/..", "a/../../b", "a//b", "a/"] {
            assert_eq!(
                refused(path).to_string(),
                format!("`{path}` must not contain empty, `.` or `..` parts")
            );
        }
    }

    #[test]
    fn deserializing_checks_the_path() {
        let path: RelativePath = serde_json::from_str(r#""a/b""#).unwrap();
        assert_eq!(path, "a/b");
        let error = serde_json::from_str::<RelativePath>(r#""../x""#).unwrap_err();
        assert!(error.to_string().contains("must not contain"), "{error}");
        assert!(serde_json::from_str::<RelativePath>("7").is_err());
    }
}
