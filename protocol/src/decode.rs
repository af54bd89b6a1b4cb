//! Decoding and validating requests, with the protocol's input limits as named constants.
//!
//! Every way a request can be wrong maps to a [`DecodeError`] whose [`DecodeError::kind`]
//! goes on the wire; decoding never panics, whatever the bytes.

use std::collections::HashSet;

use crate::PROTOCOL_VERSION;
use crate::error::{ErrorInfo, ErrorKind};
use crate::json_path::{error_path, string_before_error};
use crate::limits::{LimitValue, Limits};
use crate::outputs::MAX_OUTPUT_PATTERNS;
use crate::path::RelativePath;
use crate::request::{ExecRequest, object};
use crate::subjects::check_token;

/// Largest request accepted, in bytes (NATS' default max_payload is 1 MiB).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Room an audit event takes beyond the request it records, at most. A `received` event
/// carries the code, argv and file paths verbatim (serde never writes a string longer than the
/// request's own escaping of it) plus an envelope: per file a size and a hash (at most 76 bytes
/// more than the request's `{"path":…,"content":""}`, 19,456 for [`MAX_FILES`]), the stdin
/// hash, effective limits, usage, an error of at most [`MAX_ERROR_MESSAGE_BYTES`], the names
/// of tenant, pool, backend and worker, the trace context and the chain fields: under 4 KiB.
/// A worker accepts requests of at most `max_payload - AUDIT_ENVELOPE_BYTES`, less
/// [`AUDITED_OUTPUT_BYTES`] per file it may return ([`max_request_within`]), so that every
/// request it can answer it can also audit.
pub const AUDIT_ENVELOPE_BYTES: usize = 32 * 1024;
/// Room one returned file takes in a `finished` event's `outputs`: its path (at most
/// [`MAX_PATH_BYTES`], escaped no longer than a request's own spelling of it) and an entry of
/// size and hash.
pub const AUDITED_OUTPUT_BYTES: usize = MAX_PATH_BYTES + 128;
/// Most entries in `command` plus `args`.
pub const MAX_ARGV: usize = 1024;
/// Most environment variables.
pub const MAX_ENV_VARS: usize = 256;
/// Most files.
pub const MAX_FILES: usize = 256;
/// Longest file path, in bytes (a rule of [`RelativePath`]).
pub use crate::path::MAX_PATH_BYTES;
/// Longest language name.
pub const MAX_LANGUAGE_LEN: usize = 32;
/// Lowest and highest priority.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -100..=100;
/// Most cores `limits.cpus` may ask for (pools cap it further).
pub const MAX_CPUS: f64 = 1024.0;
/// Longest error message a [`DecodeError`] carries. Messages quote the offending input, and a
/// hostile request can make that a megabyte: the reply must still fit in a NATS message.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;
/// Longest field path a [`DecodeError`] names (a key can be as long as the request).
const MAX_FIELD_BYTES: usize = 160;

/// Why bytes are not a valid request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Larger than [`MAX_REQUEST_BYTES`] or the worker's configured maximum.
    #[error(
        "request is {size} bytes, over the {max}-byte limit: send large inputs as files in several jobs, or raise the worker's max_request_bytes (at most 1m) and the NATS server's max_payload (a worker keeps 32 KiB of it for the request's audit event)"
    )]
    TooLarge {
        /// Request size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON, or JSON of the wrong shape (types, unknown or missing fields).
    #[error("request is not a valid ExecRequest: {message} (see protocol/README.md)")]
    Malformed {
        /// serde's account, with line and column, prefixed by the field (`at `limits.memory`: `)
        /// when the error is inside one.
        message: String,
    },
    /// A `version` this crate does not speak.
    #[error(
        "request version {version} is not supported: this worker speaks version {PROTOCOL_VERSION}"
    )]
    UnsupportedVersion {
        /// The version sent.
        version: u32,
    },
    /// Well-formed JSON with a value that breaks a rule.
    #[error("invalid `{field}`: {message}")]
    Invalid {
        /// The field, as a JSON path (`files[2].path`).
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl DecodeError {
    /// The wire error kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DecodeError::TooLarge { .. } => ErrorKind::PayloadTooLarge,
            DecodeError::UnsupportedVersion { .. } => ErrorKind::UnsupportedVersion,
            DecodeError::Malformed { .. } | DecodeError::Invalid { .. } => {
                ErrorKind::InvalidRequest
            }
        }
    }

    /// The error as it travels.
    pub fn to_info(&self) -> ErrorInfo {
        ErrorInfo::new(self.kind(), self.to_string())
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        field: shorten(field.into(), MAX_FIELD_BYTES),
        message: shorten(message.into(), MAX_ERROR_MESSAGE_BYTES),
    }
}

/// `text` cut to at most `max` bytes by dropping its middle (on character boundaries), so that
/// both the quoted input at the start and the advice at the end survive.
fn shorten(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let half = max.saturating_sub('…'.len_utf8()) / 2;
    let mut head = half;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - half;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}…{}", &text[..head], &text[tail..])
}

/// The largest request a worker on a NATS server with `max_payload` that returns at most
/// `returned_files` files per job accepts: at most [`MAX_REQUEST_BYTES`], and small enough
/// that its audit events fit in one message ([`AUDIT_ENVELOPE_BYTES`], plus
/// [`AUDITED_OUTPUT_BYTES`] per returned file on `finished`). With NATS' default
/// `max_payload` of 1 MiB and the default 16 returned files: 997,376 bytes.
pub fn max_request_within(max_payload: usize, returned_files: usize) -> usize {
    max_payload
        .saturating_sub(AUDIT_ENVELOPE_BYTES)
        .saturating_sub(returned_files.saturating_mul(AUDITED_OUTPUT_BYTES))
        .min(MAX_REQUEST_BYTES)
}

/// Decodes and validates a request of at most `max_bytes` (capped at [`MAX_REQUEST_BYTES`]).
pub fn decode_request(bytes: &[u8], max_bytes: usize) -> Result<ExecRequest, DecodeError> {
    let max = max_bytes.min(MAX_REQUEST_BYTES);
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            max,
        });
    }
    let request = parse(bytes)?;
    validate(&request)?;
    Ok(request)
}

/// The request in `bytes`, checked for shape and types (and file paths, which are checked as
/// they are read) but not yet for the rules of [`validate`].
fn parse(bytes: &[u8]) -> Result<ExecRequest, DecodeError> {
    // Boxed, so this frame, under the error path's recursion, holds no whole request.
    let parsed = read(bytes).map(|request| *request);
    parsed.map_err(|error| {
        // A newer version may add fields this crate rejects as unknown: name the version instead.
        // (This frame stays small: salvage_version recurses as deep as the JSON nests.)
        if let Some(version) = salvage_version(bytes).filter(|&version| version != PROTOCOL_VERSION)
        {
            return DecodeError::UnsupportedVersion { version };
        }
        refusal(bytes, &error)
    })
}

#[inline(never)]
fn read(bytes: &[u8]) -> Result<Box<ExecRequest>, serde_json::Error> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let request = object::<_, ExecRequest>(&mut json)?;
    json.end()?;
    Ok(Box::new(request))
}

/// Why serde refused `bytes` with `error`: a file path that broke its rule, or a shape or type
/// error, named by its field when it is inside one.
fn refusal(bytes: &[u8], error: &serde_json::Error) -> DecodeError {
    let path = error_path(bytes, error);
    if let Some(refused) = path
        .as_deref()
        .and_then(|field| file_path_refused(bytes, error, field))
    {
        return refused;
    }
    let message = match path {
        Some(path) => format!("at `{}`: {error}", shorten(path, MAX_FIELD_BYTES)),
        None => error.to_string(),
    };
    DecodeError::Malformed {
        message: shorten(message, MAX_ERROR_MESSAGE_BYTES),
    }
}

/// The rule a file's path broke, when that is where serde stopped: [`RelativePath`] checks a
/// path as it is read, and the refusal names the field (`files[2].path`) as every rule's does.
/// The path is read back from the text and checked again, so that only a path that really
/// breaks a rule (not a number where a path should be) is refused this way.
fn file_path_refused(bytes: &[u8], error: &serde_json::Error, field: &str) -> Option<DecodeError> {
    let index = field.strip_prefix("files[")?.strip_suffix("].path")?;
    if !error.is_data() || index.is_empty() || !index.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let path = string_before_error(bytes, error)?;
    let broken = RelativePath::parse(&path).err()?;
    Some(invalid(field, broken.to_string()))
}

/// The integer `version` of a JSON object, when it has one.
fn salvage_version(bytes: &[u8]) -> Option<u32> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    u32::try_from(value.get("version")?.as_u64()?).ok()
}

/// The `id` of a request that failed to decode, when one can be read, so the reply names it.
pub fn salvage_id(bytes: &[u8]) -> Option<String> {
    if bytes.len() > MAX_REQUEST_BYTES {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let id = value.get("id")?.as_str()?;
    check_token("job id", id).ok().map(|()| id.to_string())
}

/// Checks the rules serde cannot express.
pub fn validate(request: &ExecRequest) -> Result<(), DecodeError> {
    if request.version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            version: request.version,
        });
    }
    check_token("job id", &request.id).map_err(|error| invalid("id", error.to_string()))?;
    validate_program(request)?;
    validate_env(request)?;
    validate_files(request)?;
    if request.outputs.len() > MAX_OUTPUT_PATTERNS {
        return Err(invalid(
            "outputs",
            format!("at most {MAX_OUTPUT_PATTERNS} patterns"),
        ));
    }
    validate_limits(&request.limits)?;
    if !PRIORITY_RANGE.contains(&request.priority) {
        return Err(invalid("priority", "must be between -100 and 100"));
    }
    Ok(())
}

fn validate_program(request: &ExecRequest) -> Result<(), DecodeError> {
    match (&request.language, &request.code, &request.command) {
        (Some(language), Some(_), None) => {
            let valid = !language.is_empty()
                && language.len() <= MAX_LANGUAGE_LEN
                && language.bytes().all(|byte| {
                    byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_+-.".contains(&byte)
                });
            if !valid {
                return Err(invalid(
                    "language",
                    format!(
                        "`{language}` is not a language name: 1 to {MAX_LANGUAGE_LEN} of a-z 0-9 _ + - ."
                    ),
                ));
            }
        }
        (None, None, Some(argv)) => {
            if argv.first().is_none_or(String::is_empty) {
                return Err(invalid(
                    "command",
                    "must name a program as its first element",
                ));
            }
        }
        (_, _, Some(_)) => {
            return Err(invalid(
                "command",
                "give either `command` or `language` + `code`, not both",
            ));
        }
        (Some(_), None, None) => return Err(invalid("code", "`language` needs `code`")),
        (None, Some(_), None) => return Err(invalid("language", "`code` needs `language`")),
        (None, None, None) => {
            return Err(invalid("code", "give `language` + `code`, or `command`"));
        }
    }
    let command = request.command.as_deref().unwrap_or_default();
    if command.len() + request.args.len() > MAX_ARGV {
        return Err(invalid(
            "args",
            format!("`command` plus `args` may have at most {MAX_ARGV} entries"),
        ));
    }
    for (list, values) in [("command", command), ("args", request.args.as_slice())] {
        if let Some(index) = values.iter().position(|arg| arg.contains('\0')) {
            return Err(invalid(format!("{list}[{index}]"), "contains a NUL byte"));
        }
    }
    Ok(())
}

fn validate_env(request: &ExecRequest) -> Result<(), DecodeError> {
    if request.env.len() > MAX_ENV_VARS {
        return Err(invalid("env", format!("at most {MAX_ENV_VARS} variables")));
    }
    for (key, value) in &request.env {
        let mut bytes = key.bytes();
        let valid = bytes
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
            && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
        if !valid {
            return Err(invalid(
                format!("env.{key}"),
                "variable names are letters, digits and _, not starting with a digit",
            ));
        }
        if value.contains('\0') {
            return Err(invalid(format!("env.{key}"), "contains a NUL byte"));
        }
    }
    Ok(())
}

fn validate_files(request: &ExecRequest) -> Result<(), DecodeError> {
    if request.files.len() > MAX_FILES {
        return Err(invalid("files", format!("at most {MAX_FILES} files")));
    }
    // Each path is a RelativePath, checked as it was read.
    for (index, file) in request.files.iter().enumerate() {
        if file.mode.is_some_and(|mode| mode > 0o777) {
            return Err(invalid(
                format!("files[{index}].mode"),
                "must be permission bits, at most 0o777 (511)",
            ));
        }
    }
    check_file_paths(request.files.iter().map(|file| &file.path)).map_err(|conflict| {
        invalid(
            format!("files[{}].path", conflict.index()),
            conflict.to_string(),
        )
    })
}

/// Two files of a job that cannot both be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileConflict {
    /// The same path twice.
    #[error("`{path}` is given twice")]
    Duplicate {
        /// The later of the two, as an index in the list checked.
        index: usize,
        /// The path.
        path: String,
    },
    /// A path that needs another file's path to be a directory (`a` and `a/b`).
    #[error(
        "file `{path}` needs `{directory}` to be a directory, but another file has that path; rename one of them"
    )]
    NotADirectory {
        /// The file that needs the directory, as an index in the list checked.
        index: usize,
        /// Its path.
        path: String,
        /// The other file's path, a leading part of `path`.
        directory: String,
    },
}

impl FileConflict {
    /// The index, in the list checked, of the file that cannot be written.
    pub fn index(&self) -> usize {
        match self {
            Self::Duplicate { index, .. } | Self::NotADirectory { index, .. } => *index,
        }
    }
}

/// Checks that files at `paths` can all be written into one directory: no path twice, none a
/// leading directory of another. The decoder applies it to a request's files; backends to a
/// job's, which may add the language's code file.
///
/// [`RelativePath`]s have one spelling (`a/b`, never `./a//b`), which is what makes comparing
/// their text right.
pub fn check_file_paths<'a>(
    paths: impl IntoIterator<Item = &'a RelativePath>,
) -> Result<(), FileConflict> {
    let paths: Vec<&RelativePath> = paths.into_iter().collect();
    let mut files = HashSet::with_capacity(paths.len());
    for (index, path) in paths.iter().map(|path| path.as_str()).enumerate() {
        if !files.insert(path) {
            return Err(FileConflict::Duplicate {
                index,
                path: path.to_string(),
            });
        }
    }
    for (index, path) in paths.iter().map(|path| path.as_str()).enumerate() {
        let mut directories = path.match_indices('/').map(|(at, _)| &path[..at]);
        if let Some(directory) = directories.find(|dir| files.contains(dir)) {
            return Err(FileConflict::NotADirectory {
                index,
                path: path.to_string(),
                directory: directory.to_string(),
            });
        }
    }
    Ok(())
}

fn validate_limits(limits: &Limits) -> Result<(), DecodeError> {
    if let Some(cpus) = limits.cpus
        && !(cpus.is_finite() && cpus > 0.0 && cpus <= MAX_CPUS)
    {
        return Err(invalid(
            "limits.cpus",
            format!("must be a number of cores above 0 and at most {MAX_CPUS}, e.g. 0.5"),
        ));
    }
    let zero = limits.iter().find(|(_, value)| match value {
        LimitValue::Duration(duration) => duration.millis() == 0,
        LimitValue::Size(size) => size.bytes() == 0,
        LimitValue::Count(count) => *count == 0,
        LimitValue::Cores(_) => false,
    });
    match zero {
        Some((name, _)) => Err(invalid(
            format!("limits.{name}"),
            "must be above zero; omit a limit to take the pool's default",
        )),
        None => Ok(()),
    }
}
