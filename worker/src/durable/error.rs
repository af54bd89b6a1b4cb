//! Durable-mode errors: each names the stream, consumer or subject and what to do.

/// The error underneath a [`DurableError`]: the NATS client's own error where there is one,
/// so that its kind and chain stay reachable, else text.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a durable-mode operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// A stream could not be created or read.
    #[error(
        "cannot create or read stream {stream}: {source}; is JetStream enabled on the server (`jetstream {{}}` in its config) and may this user use $JS.API.>?"
    )]
    Stream {
        /// Stream name.
        stream: String,
        /// The error underneath.
        #[source]
        source: Cause,
    },
    /// A stream exists with settings OpenShell cannot work with; it was left as is.
    #[error(
        "stream {stream} exists with settings OpenShell cannot use ({differences}); it was not changed: fix it with `nats stream edit {stream}`, or remove it (losing its messages) so the worker creates it"
    )]
    IncompatibleStream {
        /// Stream name.
        stream: String,
        /// Each setting that differs, as `setting: found X, need Y`.
        differences: String,
    },
    /// A consumer could not be created or read.
    #[error(
        "cannot create or read consumer {consumer} on stream {stream}: {source}; check the stream exists and the user may use $JS.API.CONSUMER.>"
    )]
    Consumer {
        /// Stream name.
        stream: String,
        /// Consumer name.
        consumer: String,
        /// The error underneath.
        #[source]
        source: Cause,
    },
    /// A consumer exists with settings OpenShell cannot work with; it was left as is.
    #[error(
        "consumer {consumer} on stream {stream} exists with settings OpenShell cannot use ({differences}); remove it with `nats consumer rm {stream} {consumer}` so the worker creates it"
    )]
    IncompatibleConsumer {
        /// Stream name.
        stream: String,
        /// Consumer name.
        consumer: String,
        /// Each setting that differs.
        differences: String,
    },
    /// A message could not be published to JetStream.
    #[error(
        "publishing to {subject} failed: {source}; check that its stream exists (nats stream ls) and NATS is reachable"
    )]
    Publish {
        /// Subject.
        subject: String,
        /// The error underneath.
        #[source]
        source: Cause,
    },
    /// A stored message could not be read.
    #[error("reading {subject} from stream {stream} failed: {source}")]
    Read {
        /// Stream name.
        stream: String,
        /// Subject.
        subject: String,
        /// The error underneath.
        #[source]
        source: Cause,
    },
    /// A pull from a consumer failed.
    #[error("pulling jobs from consumer {consumer} failed: {source}; retrying")]
    Pull {
        /// Consumer name.
        consumer: String,
        /// The error underneath.
        #[source]
        source: Cause,
    },
    /// A subscription the durable worker needs was refused.
    #[error(
        "cannot subscribe to {subject}: {source}; check the NATS permissions of the worker's user"
    )]
    Subscribe {
        /// Subject.
        subject: String,
        /// The error underneath.
        #[source]
        source: Cause,
    },
    /// A job's run lease could not be read or written.
    #[error(
        "taking the run lease of job {key} in KV bucket OPENSHELL_LEASES failed: {source}; the job is offered again later (check JetStream is up and may this user use $KV.OPENSHELL_LEASES.>)"
    )]
    Lease {
        /// Key, `<tenant>.<job id>`.
        key: String,
        /// The error underneath.
        #[source]
        source: Cause,
    },
    /// A job's attempt count could not be read or written.
    #[error(
        "counting the runs of job {key} in KV bucket OPENSHELL_ATTEMPTS failed: {source}; the job is offered again later (check JetStream is up and may this user use $KV.OPENSHELL_ATTEMPTS.>)"
    )]
    Attempts {
        /// Key, `<tenant>.<job id>`.
        key: String,
        /// The error underneath.
        #[source]
        source: Cause,
    },
}
