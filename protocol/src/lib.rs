//! OpenShell wire protocol, version 1.
//!
//! Agents publish an [`ExecRequest`] on `<prefix>.exec.<pool>.<tenant>` and receive an
//! [`ExecResult`] on the reply subject; workers publish [`AuditEvent`]s on
//! `<prefix>.audit.<tenant>.<pool>.<event>`. This crate holds the message types, the subject
//! scheme, request validation with its named limits, the JSON Schemas, and (feature `client`)
//! a typed async client. It contains no backend code.

pub mod audit;
pub mod decode;
pub mod egress;
pub mod error;
mod json_path;
pub mod limits;
pub mod output;
pub mod outputs;
pub mod path;
pub mod payload;
pub mod request;
pub mod result;
pub mod schema;
pub mod session;
pub mod signal;
pub mod subjects;
pub mod traceparent;
pub mod units;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "client")]
pub mod session_client;

pub use audit::{AuditCheckpoint, AuditEvent, AuditEventType, ResourceUsage};
pub use decode::{
    AUDIT_ENVELOPE_BYTES, AUDITED_OUTPUT_BYTES, DecodeError, decode_request, max_request_within,
};
pub use egress::{EgressRule, NetworkAccess};
pub use error::{ErrorInfo, ErrorKind};
pub use limits::{LimitName, Limits};
pub use output::{OutputChunk, OutputStream};
pub use outputs::{
    FileFetch, FilesStatus, OutputMatcher, OutputPattern, ReturnedFile, ReturnedFiles, SkipReason,
    SkippedFile,
};
pub use path::{PathError, RelativePath};
pub use payload::Payload;
pub use request::{ExecRequest, FileSpec};
pub use result::{Enforcement, EnforcementReport, EnforcementStatus, ExecResult, Verdict};
pub use signal::{signal_name, signal_number};
pub use subjects::Subjects;
pub use traceparent::{InvalidTraceparent, TRACEPARENT_HEADER, Traceparent};
pub use units::{ByteSize, DurationMs};

#[cfg(feature = "client")]
pub use client::{Client, ClientError};

/// The protocol version this crate speaks; requests carry it in `version`.
pub const PROTOCOL_VERSION: u32 = 1;
