//! Files a job leaves behind that its request asked for (`outputs`), and how they come back.
//!
//! A request names patterns relative to the working directory (`out/*.png`, `report.csv`,
//! `**/*.log`): `*` and `?` stay within one path part, `**` crosses parts. After the job, the
//! backend returns the regular files that match (never a symlink, never anything outside the
//! working directory), within the worker's caps on count and bytes. Small files travel inline
//! in the result; larger ones are kept in the `OPENSHELL_FILES` object store and fetched by
//! request on `<prefix>.files.<tenant>.<job_id>` (see [`FileFetch`]).

use std::borrow::Cow;
use std::fmt;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::path::RelativePath;
use crate::payload::Payload;

/// Most patterns in `outputs`.
pub const MAX_OUTPUT_PATTERNS: usize = 32;
/// Most entries a result lists in [`ReturnedFiles::skipped`]; the count is always complete.
pub const MAX_SKIPPED_LISTED: usize = 64;
/// Header of a file fetch reply: the file's size in bytes.
pub const FILE_SIZE_HEADER: &str = "Openshell-File-Size";
/// Header of a file fetch reply: the file's hex SHA-256.
pub const FILE_SHA256_HEADER: &str = "Openshell-File-Sha256";
/// Header of a file fetch reply: the offset of the bytes in its body.
pub const FILE_OFFSET_HEADER: &str = "Openshell-File-Offset";
/// Header of a file fetch reply that failed: the [`crate::ErrorKind`]; the body is an
/// [`crate::ErrorInfo`].
pub const FILE_ERROR_HEADER: &str = "Openshell-Error";

/// One pattern of `outputs`: the rules of a [`RelativePath`] (relative, no `.`, `..` or
/// empty parts), and a glob that compiles. On the wire it is the plain string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutputPattern(RelativePath);

impl OutputPattern {
    /// `pattern` checked, or why it is not one.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let path = RelativePath::parse(pattern).map_err(|error| error.to_string())?;
        glob(pattern).map_err(|error| format!("`{pattern}` is not a glob: {}", error.kind()))?;
        Ok(Self(path))
    }

    /// The pattern's text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

fn glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(false)
        .build()
}

/// Which paths a set of [`OutputPattern`]s selects.
#[derive(Debug, Clone)]
pub struct OutputMatcher(GlobSet);

impl OutputMatcher {
    /// The matcher for `patterns` (each already checked, so building cannot fail).
    pub fn new(patterns: &[OutputPattern]) -> Self {
        let mut set = GlobSetBuilder::new();
        for pattern in patterns {
            if let Ok(glob) = glob(pattern.as_str()) {
                set.add(glob);
            }
        }
        Self(set.build().unwrap_or_else(|_| GlobSet::empty()))
    }

    /// True when `path` (relative to the working directory) is asked for.
    pub fn matches(&self, path: &str) -> bool {
        self.0.is_match(path)
    }
}

impl fmt::Display for OutputPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for OutputPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

struct PatternVisitor;

impl Visitor<'_> for PatternVisitor {
    type Value = OutputPattern;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a relative path or glob")
    }
    fn visit_str<E: de::Error>(self, pattern: &str) -> Result<OutputPattern, E> {
        OutputPattern::parse(pattern).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for OutputPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(PatternVisitor)
    }
}

/// A plain string; the rules are in the field's description.
impl JsonSchema for OutputPattern {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "OutputPattern".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        String::json_schema(generator)
    }
}

/// Whether every file the patterns matched came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FilesStatus {
    /// Every matching regular file is in `files`.
    Complete,
    /// More files matched than the worker returns per job; the rest are in `skipped`.
    TooManyFiles,
    /// The matching files were larger in total than the worker returns per job.
    TooLarge,
    /// Some files were too large to travel inline and could not be stored (no JetStream, or
    /// the object store failed); they are in `skipped`.
    StoreUnavailable,
    /// The job ended before its files could be read (the sandbox failed or was lost).
    NotCollected,
}

impl FilesStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FilesStatus::Complete => "complete",
            FilesStatus::TooManyFiles => "too_many_files",
            FilesStatus::TooLarge => "too_large",
            FilesStatus::StoreUnavailable => "store_unavailable",
            FilesStatus::NotCollected => "not_collected",
        }
    }
}

impl SkipReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Symlink => "symlink",
            SkipReason::NotRegularFile => "not_regular_file",
            SkipReason::CountCap => "count_cap",
            SkipReason::SizeCap => "size_cap",
            SkipReason::StoreUnavailable => "store_unavailable",
        }
    }
}

/// Why a matching path was not returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// A symbolic link: never followed.
    Symlink,
    /// Not a regular file (a directory, device, socket or fifo).
    NotRegularFile,
    /// Past the cap on files per job.
    CountCap,
    /// Past the cap on bytes per job.
    SizeCap,
    /// Too large for the result and the object store was unavailable.
    StoreUnavailable,
}

/// A path the patterns matched that did not come back, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SkippedFile {
    /// Path inside the working directory.
    pub path: RelativePath,
    /// Why.
    pub reason: SkipReason,
}

/// One returned file: inline (`content`) or stored (`object`), never neither.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnedFile {
    /// Path inside the working directory.
    pub path: RelativePath,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the contents.
    pub sha256: String,
    /// The contents, for a file small enough to travel in the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Payload>,
    /// For a larger file: its object in the `OPENSHELL_FILES` object store
    /// (`<tenant>/<job_id>/<path>`); fetch it with [`FileFetch`] requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

/// The files a request's `outputs` asked for, as the result reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnedFiles {
    /// Whether every match came back.
    pub status: FilesStatus,
    /// The files returned, by path.
    #[serde(default)]
    pub files: Vec<ReturnedFile>,
    /// Matches not returned, with the reason (at most [`MAX_SKIPPED_LISTED`] listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedFile>,
    /// How many matches were not returned in all.
    #[serde(default)]
    pub skipped_count: u64,
}

impl ReturnedFiles {
    /// No file read: the job ended before its files could be.
    pub fn not_collected() -> Self {
        Self {
            status: FilesStatus::NotCollected,
            files: Vec::new(),
            skipped: Vec::new(),
            skipped_count: 0,
        }
    }
}

/// A request for part of a stored file, sent on `<prefix>.files.<tenant>.<job_id>`; the reply
/// carries up to one message's worth of bytes from `offset` in its body, with the
/// [`FILE_SIZE_HEADER`], [`FILE_SHA256_HEADER`] and [`FILE_OFFSET_HEADER`] headers, or the
/// [`FILE_ERROR_HEADER`] and an error. An empty body at `offset` < size never happens: read
/// until `offset` reaches the size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileFetch {
    /// The file's path inside the job's working directory, as the result lists it.
    pub path: RelativePath,
    /// First byte wanted.
    #[serde(default)]
    pub offset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(patterns: &[&str]) -> OutputMatcher {
        let patterns: Vec<_> = patterns
            .iter()
            .map(|p| OutputPattern::parse(p).unwrap())
            .collect();
        OutputMatcher::new(&patterns)
    }

    #[test]
    fn a_star_stays_in_one_part_and_a_double_star_crosses_parts() {
        let m = matcher(&["out/*.png", "report.csv", "logs/**/*.log"]);
        assert!(m.matches("out/a.png"));
        assert!(!m.matches("out/sub/a.png"));
        assert!(m.matches("report.csv"));
        assert!(!m.matches("x/report.csv"));
        assert!(m.matches("logs/a.log"));
        assert!(m.matches("logs/x/y/a.log"));
        assert!(!m.matches("other.png"));
    }

    #[test]
    fn patterns_that_leave_the_directory_or_do_not_compile_are_refused() {
        for bad in ["/etc/*", "../x", "a/../b", "", "a//b", "a\\b", "a/[b"] {
            assert!(OutputPattern::parse(bad).is_err(), "{bad}");
        }
        let error = serde_json::from_str::<OutputPattern>(r#""../*""#).unwrap_err();
        assert!(error.to_string().contains("must not contain"), "{error}");
        assert_eq!(
            serde_json::to_value(OutputPattern::parse("a/*.txt").unwrap()).unwrap(),
            "a/*.txt"
        );
    }

    #[test]
    fn wire_names_are_the_serde_names() {
        for status in [
            FilesStatus::Complete,
            FilesStatus::TooManyFiles,
            FilesStatus::TooLarge,
            FilesStatus::StoreUnavailable,
            FilesStatus::NotCollected,
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        for reason in [
            SkipReason::Symlink,
            SkipReason::NotRegularFile,
            SkipReason::CountCap,
            SkipReason::SizeCap,
            SkipReason::StoreUnavailable,
        ] {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
    }
}
