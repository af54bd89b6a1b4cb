//! A typed refusal to run a job.

use openshell_protocol::{ErrorInfo, ErrorKind};

/// Why admission refused a job: a kind for programs and a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Rejection {
    /// Machine-readable kind.
    pub kind: ErrorKind,
    /// What was refused, by which rule, and how to comply.
    pub message: String,
}

impl Rejection {
    /// A rejection of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<Rejection> for ErrorInfo {
    fn from(rejection: Rejection) -> Self {
        ErrorInfo::new(rejection.kind, rejection.message)
    }
}
