//! Turning Docker API failures into [`BackendError`]s that say what failed, where, and what
//! to do.

use std::error::Error as _;

use bollard::errors::Error as ApiError;
use openshell_protocol::ErrorKind;

use openshell_backend::BackendError;

/// The backend's kind, as in `SANDBOX_BACKEND`.
pub(super) const KIND: &str = "docker";

/// What to tell an operator whose daemon cannot be reached.
const START_DAEMON: &str = "start the Docker daemon (`deploy/setup.sh` starts dockerd), or point \
     DOCKER_HOST / [pools.NAME.docker] endpoint at a running engine";

/// A Docker backend error of `kind` at `where_`.
pub(super) fn error(
    kind: ErrorKind,
    where_: impl Into<String>,
    message: impl Into<String>,
) -> BackendError {
    BackendError::new(kind, KIND, where_, message)
}

/// How a failed API call is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// The daemon could not be reached or did not answer in time.
    Unreachable,
    /// The object (container, exec, image) does not exist (404).
    NotFound,
    /// The container is not running, or is being removed (409).
    Conflict,
    /// The daemon answered with another error.
    Refused,
}

/// Classifies an API error.
pub(super) fn failure(error: &ApiError) -> Failure {
    match error {
        ApiError::DockerResponseServerError {
            status_code: 404, ..
        } => Failure::NotFound,
        ApiError::DockerResponseServerError {
            status_code: 409, ..
        } => Failure::Conflict,
        ApiError::DockerResponseServerError { .. }
        | ApiError::JsonDataError { .. }
        | ApiError::JsonSerdeError { .. }
        | ApiError::APIVersionParseError { .. } => Failure::Refused,
        _ => Failure::Unreachable,
    }
}

/// The error and its causes on one line.
pub(super) fn describe(error: &ApiError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A failed API call made while `doing` something to `target` on the engine at `endpoint`.
pub(super) fn api(doing: &str, target: &str, endpoint: &str, error: &ApiError) -> BackendError {
    let detail = describe(error);
    match failure(error) {
        Failure::Unreachable => self::error(
            ErrorKind::ConnectionFailed,
            endpoint,
            format!(
                "cannot reach the Docker daemon while {doing} ({target}): {detail}; {START_DAEMON}"
            ),
        ),
        _ => self::error(
            ErrorKind::SandboxStartFailed,
            format!("{endpoint} {target}"),
            format!("Docker sandbox failed to start: {doing} failed: {detail}"),
        ),
    }
}

/// The image lacks what the resident runner (`runner`) needs, so its container exited before
/// the job's end; `said` is what the container wrote on stderr (the init's message).
pub(super) fn runner_unsupported(image: &str, target: &str, said: &str) -> BackendError {
    self::error(
        ErrorKind::SandboxStartFailed,
        format!("{target} image {image}"),
        format!(
            "Docker sandbox failed to start: image `{image}` cannot run OpenShell's runner \
             (`{}`): every sandbox image needs /bin/sh (POSIX), head, env, sleep and tar; add \
             them (a Debian, Alpine or busybox base has them) or use openshell-sandbox:latest",
            said.trim()
        ),
    )
}

/// The daemon answered, but the image a job needs is missing.
pub(super) fn image_missing(image: &str, endpoint: &str) -> BackendError {
    error(
        ErrorKind::SandboxStartFailed,
        format!("{endpoint} image {image}"),
        format!(
            "Docker sandbox failed to start: image `{image}` is not on the engine; build it with \
             `deploy/setup.sh` (offline: `deploy/sandbox-image/build-offline.sh`, with registry access: \
             `docker build -t {image} deploy/sandbox-image`), or set SANDBOX_DOCKER_IMAGE"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status_code: u16) -> ApiError {
        ApiError::DockerResponseServerError {
            status_code,
            message: "nope".into(),
        }
    }

    #[test]
    fn unreachable_daemons_are_connection_failures_with_advice() {
        let io = ApiError::IOError {
            err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(failure(&io), Failure::Unreachable);
        assert_eq!(
            failure(&ApiError::RequestTimeoutError),
            Failure::Unreachable
        );
        let error = api("creating a container", "image x", "unix:///d.sock", &io);
        assert_eq!(error.kind, ErrorKind::ConnectionFailed);
        assert!(error.message.contains("deploy/setup.sh"), "{error}");
        assert!(error.to_string().contains("unix:///d.sock"), "{error}");
    }

    #[test]
    fn daemon_answers_are_start_failures() {
        assert_eq!(failure(&server(404)), Failure::NotFound);
        assert_eq!(failure(&server(409)), Failure::Conflict);
        assert_eq!(failure(&server(500)), Failure::Refused);
        let error = api("starting", "container abc", "unix:///d.sock", &server(500));
        assert_eq!(error.kind, ErrorKind::SandboxStartFailed);
        assert!(error.message.contains("Docker sandbox failed to start"));
        assert!(error.where_.contains("container abc"));
    }
}
