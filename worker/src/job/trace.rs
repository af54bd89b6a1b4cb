//! The job's W3C trace context: the request's NATS header, else its `traceparent` field, by
//! the protocol's [`Traceparent`] rules. A malformed one is logged at debug level and ignored,
//! never a reason to refuse a job.

use async_nats::Message;
use openshell_protocol::audit::AuditContext;
use openshell_protocol::{ExecRequest, InvalidTraceparent, Traceparent};

/// The valid `traceparent` header of `message`, if any.
pub fn from_header(message: &Message) -> Option<Traceparent> {
    usable(
        Traceparent::from_headers(message.headers.as_ref()),
        "header",
    )
}

/// The header's trace context, else the request field's, read without decoding the request:
/// for a job answered without going through [`crate::job::PoolRuntime::process`].
pub fn from_message(message: &Message) -> Option<Traceparent> {
    from_header(message).or_else(|| {
        let field = Traceparent::from_request_bytes(&message.payload);
        usable(field, "request field")
    })
}

/// Gives `context` the `traceparent` field of `request` when the header gave none, and records
/// the job's trace context on the current (job) span.
pub fn adopt(context: &mut AuditContext, request: &ExecRequest) {
    if context.traceparent.is_none() {
        let field = request.traceparent.as_deref().map(Traceparent::parse);
        context.traceparent = usable(field, "request field");
    }
    if let Some(traceparent) = &context.traceparent {
        tracing::Span::current().record("traceparent", traceparent.as_str());
    }
}

/// The trace context `found` in `source`, when it is valid; a malformed one is logged.
fn usable(
    found: Option<Result<Traceparent, InvalidTraceparent>>,
    source: &'static str,
) -> Option<Traceparent> {
    match found? {
        Ok(traceparent) => Some(traceparent),
        Err(invalid) => {
            tracing::debug!(source, value = ?invalid.shown, "ignoring an invalid traceparent (want 00-<32 hex>-<16 hex>-<2 hex>)");
            None
        }
    }
}
