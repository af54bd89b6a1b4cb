//! JSON Schemas of the wire messages, generated from the Rust types.
//!
//! The checked-in copies under `protocol/schema/` are compared with these by a test; run
//! `OPENSHELL_BLESS=1 cargo test -p openshell-protocol` to rewrite them after a change.

use crate::audit::{AuditCheckpoint, AuditEvent};
use crate::output::OutputChunk;
use crate::outputs::FileFetch;
use crate::request::ExecRequest;
use crate::result::ExecResult;
use crate::session::{SessionClose, SessionClosed, SessionError, SessionOpen, SessionOpened};

/// A message kind and its schema file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// [`ExecRequest`].
    Request,
    /// [`ExecResult`].
    Result,
    /// [`AuditEvent`].
    Audit,
    /// [`OutputChunk`].
    Output,
    /// [`FileFetch`].
    FileFetch,
    /// [`AuditCheckpoint`].
    Checkpoint,
    /// [`SessionOpen`].
    SessionOpen,
    /// [`SessionOpened`].
    SessionOpened,
    /// [`SessionClose`].
    SessionClose,
    /// [`SessionClosed`].
    SessionClosed,
    /// [`SessionError`].
    SessionError,
}

impl Message {
    /// Every message kind.
    pub const ALL: [Message; 11] = [
        Message::Request,
        Message::Result,
        Message::Audit,
        Message::Output,
        Message::FileFetch,
        Message::Checkpoint,
        Message::SessionOpen,
        Message::SessionOpened,
        Message::SessionClose,
        Message::SessionClosed,
        Message::SessionError,
    ];

    /// File name under `protocol/schema/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Message::Request => "exec-request.v1.json",
            Message::Result => "exec-result.v1.json",
            Message::Audit => "audit-event.v1.json",
            Message::Output => "output-chunk.v1.json",
            Message::FileFetch => "file-fetch.v1.json",
            Message::Checkpoint => "audit-checkpoint.v1.json",
            Message::SessionOpen => "session-open.v1.json",
            Message::SessionOpened => "session-opened.v1.json",
            Message::SessionClose => "session-close.v1.json",
            Message::SessionClosed => "session-closed.v1.json",
            Message::SessionError => "session-error.v1.json",
        }
    }

    /// The schema, as pretty JSON.
    pub fn schema_json(self) -> String {
        let schema = match self {
            Message::Request => schemars::schema_for!(ExecRequest),
            Message::Result => schemars::schema_for!(ExecResult),
            Message::Audit => schemars::schema_for!(AuditEvent),
            Message::Output => schemars::schema_for!(OutputChunk),
            Message::FileFetch => schemars::schema_for!(FileFetch),
            Message::Checkpoint => schemars::schema_for!(AuditCheckpoint),
            Message::SessionOpen => schemars::schema_for!(SessionOpen),
            Message::SessionOpened => schemars::schema_for!(SessionOpened),
            Message::SessionClose => schemars::schema_for!(SessionClose),
            Message::SessionClosed => schemars::schema_for!(SessionClosed),
            Message::SessionError => schemars::schema_for!(SessionError),
        };
        let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
        text.push('\n');
        text
    }
}
