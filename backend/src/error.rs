//! A backend failure: what failed, where, what to do, and the error underneath.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use openshell_protocol::{ErrorInfo, ErrorKind};

/// A backend failure: the job could not be run as asked. Says what failed, where, and what to
/// do; the error that caused it (an I/O, Docker API or SSH error) stays reachable as its
/// [`source`](Error::source) instead of being flattened into the message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{backend} backend: {message} [{where_}]")]
pub struct BackendError {
    /// Machine-readable kind (connection failed, sandbox start failed, ...).
    pub kind: ErrorKind,
    /// Backend name.
    pub backend: &'static str,
    /// Where: a host, container id, path.
    pub where_: String,
    /// What failed and what to do.
    pub message: String,
    /// The error underneath, when there is one.
    #[source]
    pub source: Option<Cause>,
}

/// The error underneath a [`BackendError`], shared so that the error stays cheap to clone.
#[derive(Clone)]
pub struct Cause(Arc<dyn Error + Send + Sync + 'static>);

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for BackendError {
    /// Equal when they say the same; the causes are not compared.
    fn eq(&self, other: &Self) -> bool {
        (self.kind, self.backend, &self.where_, &self.message)
            == (other.kind, other.backend, &other.where_, &other.message)
    }
}

impl Eq for BackendError {}

impl BackendError {
    /// A new error.
    pub fn new(
        kind: ErrorKind,
        backend: &'static str,
        where_: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            backend,
            where_: where_.into(),
            message: message.into(),
            source: None,
        }
    }

    /// The same error, caused by `source`.
    pub fn caused_by(mut self, source: impl Error + Send + Sync + 'static) -> Self {
        self.source = Some(Cause(Arc::new(source)));
        self
    }

    /// The error as it travels to clients: kind and message (the cause stays in the logs).
    pub fn to_info(&self) -> ErrorInfo {
        ErrorInfo::new(self.kind, self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_kept_as_the_source() {
        let error = BackendError::new(
            ErrorKind::Internal,
            "none",
            "/tmp",
            "creating a directory failed",
        )
        .caused_by(std::io::Error::other("disk full"));
        assert_eq!(
            error.source().map(ToString::to_string).as_deref(),
            Some("disk full")
        );
        assert_eq!(
            error.to_string(),
            "none backend: creating a directory failed [/tmp]"
        );
        assert_eq!(error.clone(), error);
    }
}
