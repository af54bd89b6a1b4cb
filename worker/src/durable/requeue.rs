//! Which processed jobs go back to the queue unrun instead of having their result stored: a
//! job that could not be audited, one already running here, one stopped by shutdown before
//! it started, one whose backend could not start it while the backend is down.

use std::time::Duration;

use openshell_protocol::ErrorKind;

use crate::job::Processed;

/// Delay before a job that could not be audited or stored is offered again.
pub const RETRY_DELAY: Duration = Duration::from_secs(2);

/// A job that goes back to the queue: why (for the log), and when it is offered again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutBack {
    /// Why the job did not run.
    pub why: &'static str,
    /// Delay before it is offered again.
    pub delay: Duration,
}

/// What becomes of a processed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Its result is stored: it ran, or was refused for good.
    No,
    /// It did not run: put back.
    Yes(PutBack),
    /// Its backend could not start it: put back if the backend is down (an outage, so the job
    /// waits for a backend); with the backend up, the job itself is at fault and its result is
    /// stored.
    IfBackendDown(PutBack),
}

/// What becomes of `processed`, a job of a consumer whose `ack_wait` is given.
pub fn decide(processed: &Processed, ack_wait: Duration) -> Requeue {
    match processed.result.error.as_ref().map(|e| e.kind) {
        _ if !processed.audited => Requeue::Yes(PutBack {
            why: "audit stream unavailable: job not run",
            delay: RETRY_DELAY,
        }),
        // Still running here (a redelivery raced the in-progress ack): leave it to that run.
        Some(ErrorKind::DuplicateJob) => Requeue::Yes(PutBack {
            why: "the job is running on this worker already",
            delay: ack_wait,
        }),
        // Stopped before it started: another worker takes it.
        Some(ErrorKind::ShuttingDown) => Requeue::Yes(PutBack {
            why: "worker shutting down before the job started",
            delay: Duration::ZERO,
        }),
        Some(kind) if crate::job::never_started(kind) => Requeue::IfBackendDown(PutBack {
            why: "the backend is down and could not start the job",
            delay: RETRY_DELAY,
        }),
        _ => Requeue::No,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openshell_protocol::{AuditEventType, ExecRequest};

    use super::*;
    use crate::job::Waiting;
    use crate::job::fakes::{FakeAudit, Fixture, TENANT};

    const ACK_WAIT: Duration = Duration::from_secs(30);

    /// Processes one `echo` job as durable mode does, recording audit events in `audit`.
    async fn process(audit: std::sync::Arc<FakeAudit>) -> (Fixture, Processed) {
        let fixture = Fixture::new(FakeAudit::working());
        let request = ExecRequest::command("q1", vec!["echo".into(), "hi".into()]);
        let raw = Bytes::from(serde_json::to_vec(&request).expect("request encodes"));
        let processed = fixture
            .runtime
            .with_audit(audit)
            .process(TENANT, &raw, None, Waiting::Unbounded)
            .await;
        (fixture, processed)
    }

    #[tokio::test]
    async fn a_job_that_could_not_be_audited_goes_back_to_the_queue_unrun() {
        for refused in [AuditEventType::Received, AuditEventType::Started] {
            let (fixture, processed) = process(FakeAudit::refusing(refused)).await;
            assert_eq!(fixture.backend.executed(), 0, "{refused:?}: the job ran");
            assert_eq!(
                decide(&processed, ACK_WAIT),
                Requeue::Yes(PutBack {
                    why: "audit stream unavailable: job not run",
                    delay: RETRY_DELAY,
                }),
                "{refused:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_job_that_ran_has_its_result_stored() {
        let (fixture, processed) = process(FakeAudit::working()).await;
        assert_eq!(fixture.backend.executed(), 1);
        assert_eq!(decide(&processed, ACK_WAIT), Requeue::No);
    }
}
