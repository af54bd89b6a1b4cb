//! The typed client's session calls: open, run jobs in, and close a [`crate::session`].
//!
//! A session's subjects name the worker holding it, so when that worker is gone NATS answers
//! "no responders" at once; these calls turn that into `session_lost`, never a hang.

use std::time::Duration;

use async_nats::RequestErrorKind;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::client::{Client, ClientError, reply_wait};
use crate::error::{ErrorInfo, ErrorKind};
use crate::request::ExecRequest;
use crate::result::ExecResult;
use crate::session::{SessionClose, SessionClosed, SessionOpen, SessionOpened, SessionReply};
use crate::subjects::check_token;

/// How long opening a session may take (creating its sandbox).
pub const OPEN_WAIT: Duration = Duration::from_secs(60);

impl Client {
    /// Opens a session on `pool` as `tenant`.
    pub async fn open_session(
        &self,
        pool: &str,
        tenant: &str,
        open: &SessionOpen,
    ) -> Result<SessionOpened, ClientError> {
        check_token("pool", pool).map_err(|error| ClientError::Invalid(error.to_string()))?;
        check_token("tenant", tenant).map_err(|error| ClientError::Invalid(error.to_string()))?;
        let subject = self.subjects().session_open(pool, tenant);
        let payload = encode(open)?;
        let reply = self
            .session_request(&subject, payload, OPEN_WAIT, || ClientError::NoWorkers {
                pool: pool.to_string(),
                subject: subject.clone(),
            })
            .await?;
        decode_reply(&subject, &reply)
    }

    /// Runs `request` in `session` and waits for its result.
    pub async fn session_exec(
        &self,
        session: &SessionOpened,
        request: &ExecRequest,
    ) -> Result<ExecResult, ClientError> {
        self.session_exec_at(&session.subject, &session.session, request)
            .await
    }

    /// Runs `request` in session `session` whose job subject is `subject` (from
    /// [`SessionHandle`]), and waits for its result.
    pub async fn session_exec_at(
        &self,
        subject: &str,
        session: &str,
        request: &ExecRequest,
    ) -> Result<ExecResult, ClientError> {
        let wait = reply_wait(request);
        let payload = encode(request)?;
        let reply = self
            .session_request(subject, payload, wait, || lost(subject, session))
            .await?;
        if let Ok(result) = serde_json::from_slice::<ExecResult>(&reply) {
            return Ok(result);
        }
        decode_reply::<ExecResult>(subject, &reply)
    }

    /// Closes `session`.
    pub async fn close_session(
        &self,
        session: &SessionOpened,
    ) -> Result<SessionClosed, ClientError> {
        self.close_session_at(&session.close_subject, &session.session)
            .await
    }

    /// Closes session `session` whose close subject is `subject`.
    pub async fn close_session_at(
        &self,
        subject: &str,
        session: &str,
    ) -> Result<SessionClosed, ClientError> {
        let payload = encode(&SessionClose::default())?;
        let reply = self
            .session_request(subject, payload, OPEN_WAIT, || lost(subject, session))
            .await?;
        decode_reply(subject, &reply)
    }

    async fn session_request(
        &self,
        subject: &str,
        payload: Vec<u8>,
        wait: Duration,
        no_responders: impl FnOnce() -> ClientError,
    ) -> Result<Bytes, ClientError> {
        let request = async_nats::Request::new()
            .payload(Bytes::from(payload))
            .timeout(Some(wait));
        match self.nats().send_request(subject.to_string(), request).await {
            Ok(message) => Ok(message.payload),
            Err(error) => Err(match error.kind() {
                RequestErrorKind::NoResponders => no_responders(),
                RequestErrorKind::TimedOut => ClientError::Nats {
                    subject: subject.to_string(),
                    message: format!("no answer within {wait:?}"),
                },
                _ => ClientError::Nats {
                    subject: subject.to_string(),
                    message: error.to_string(),
                },
            }),
        }
    }
}

/// A session as the command line names it: `<worker>.<session>`, the two tokens its
/// subjects need besides the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionHandle {
    /// The holding worker's subject token.
    pub worker: String,
    /// The session id.
    pub session: String,
}

impl SessionHandle {
    /// The handle of `opened`.
    pub fn of(opened: &SessionOpened) -> Self {
        let worker = opened.subject.rsplit('.').nth(2).unwrap_or_default();
        Self {
            worker: worker.to_string(),
            session: opened.session.clone(),
        }
    }

    /// Parses `<worker>.<session>`.
    pub fn parse(text: &str) -> Result<Self, ClientError> {
        let invalid = || {
            ClientError::Invalid(format!(
                "`{text}` is not a session handle: give WORKER.SESSION as `openshell session open` printed it"
            ))
        };
        let (worker, session) = text.split_once('.').ok_or_else(invalid)?;
        check_token("worker", worker).map_err(|_| invalid())?;
        check_token("session", session).map_err(|_| invalid())?;
        Ok(Self {
            worker: worker.to_string(),
            session: session.to_string(),
        })
    }
}

impl std::fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.worker, self.session)
    }
}

/// `session_lost` for `session` whose subject `subject` has no responder.
fn lost(subject: &str, session: &str) -> ClientError {
    ClientError::Session {
        subject: subject.to_string(),
        error: ErrorInfo::new(
            ErrorKind::SessionLost,
            format!(
                "no worker holds session `{session}` any more (its worker stopped or died): its sandbox and state are gone; open a new session"
            ),
        ),
    }
}

fn encode<T: serde::Serialize>(message: &T) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(message).map_err(|error| ClientError::Invalid(error.to_string()))
}

fn decode_reply<T: DeserializeOwned>(subject: &str, reply: &[u8]) -> Result<T, ClientError> {
    match serde_json::from_slice::<SessionReply<T>>(reply) {
        Ok(SessionReply::Ok(answer)) => Ok(answer),
        Ok(SessionReply::Err(refused)) => Err(ClientError::Session {
            subject: subject.to_string(),
            error: refused.error,
        }),
        Err(error) => Err(ClientError::Nats {
            subject: subject.to_string(),
            message: format!("the answer is not a session message: {error}"),
        }),
    }
}
