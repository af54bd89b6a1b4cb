//! The job path with fakes (see `fakes`): what is audited, what runs, what is answered.

use bytes::Bytes;
use openshell_protocol::{
    AuditEventType, ErrorKind, ExecRequest, LimitName, OutputStream, Verdict,
};

use super::Waiting;
use super::fakes::{FakeAudit, Fixture, TENANT};

const REPLY: &str = "_INBOX.acme.1";

fn echo(id: &str) -> Vec<u8> {
    let request = ExecRequest::command(id, vec!["echo".into(), "hi".into()]);
    serde_json::to_vec(&request).expect("request encodes")
}

/// Handles `payload` as a core request answered on [`REPLY`].
async fn handle(fixture: &Fixture, payload: &[u8]) {
    let message = fixture.message(payload, Some(REPLY));
    let seat = fixture
        .runtime
        .waiting()
        .try_enter(TENANT)
        .expect("a seat in an empty waiting room");
    std::sync::Arc::clone(&fixture.runtime)
        .handle(message, seat)
        .await;
}

#[tokio::test]
async fn a_job_is_audited_received_started_finished_runs_and_is_answered() {
    let fixture = Fixture::new(FakeAudit::working());
    handle(&fixture, &echo("j1")).await;

    assert_eq!(fixture.backend.executed(), 1);
    assert_eq!(
        fixture.audit.recorded(),
        [
            AuditEventType::Received,
            AuditEventType::Started,
            AuditEventType::Finished
        ]
    );
    let replies = fixture.replier.replies();
    assert_eq!(replies.len(), 1, "exactly one reply");
    let (subject, result) = &replies[0];
    assert_eq!(subject, REPLY);
    assert_eq!(result.id, "j1");
    assert_eq!(result.status, Verdict::Completed, "{result:?}");
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(result.stdout.to_text_lossy(), "hi\n");
    assert_eq!(
        (result.tenant.as_str(), result.pool.as_str()),
        (TENANT, "none")
    );
    let finished = fixture.audit.events().pop().expect("a finished event");
    assert_eq!(finished.job_id, "j1");
}

#[tokio::test]
async fn a_job_whose_received_event_is_not_recorded_does_not_run() {
    let fixture = Fixture::new(FakeAudit::refusing(AuditEventType::Received));
    handle(&fixture, &echo("j2")).await;

    assert_eq!(
        fixture.backend.executed(),
        0,
        "the backend was asked to run it"
    );
    assert_eq!(fixture.audit.recorded(), []);
    let replies = fixture.replier.replies();
    assert_eq!(replies.len(), 1, "exactly one reply");
    let error = replies[0].1.error.as_ref().expect("an error");
    assert_eq!(error.kind, ErrorKind::Internal);
    assert!(
        error
            .message
            .contains("not run because it could not be audited first"),
        "{}",
        error.message
    );
    assert_eq!(replies[0].1.status, Verdict::BackendError);
}

#[tokio::test]
async fn a_job_whose_started_event_is_not_recorded_does_not_run() {
    let fixture = Fixture::new(FakeAudit::refusing(AuditEventType::Started));
    handle(&fixture, &echo("j3")).await;

    assert_eq!(
        fixture.backend.executed(),
        0,
        "the backend was asked to run it"
    );
    // The job ends as it began: audited, as not run.
    assert_eq!(
        fixture.audit.recorded(),
        [AuditEventType::Received, AuditEventType::Finished]
    );
    let replies = fixture.replier.replies();
    assert_eq!(replies.len(), 1, "exactly one reply");
    let result = &replies[0].1;
    assert_eq!(result.status, Verdict::BackendError);
    let error = result.error.as_ref().expect("an error");
    assert_eq!(error.kind, ErrorKind::Internal);
    assert!(
        error.message.contains("its start could not be audited"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_reply_subject_of_another_tenant_is_refused_unanswered_and_not_run() {
    let fixture = Fixture::new(FakeAudit::working());
    let message = fixture.message(&echo("j4"), Some("_INBOX.globex.1"));
    let seat = fixture.runtime.waiting().try_enter(TENANT).expect("a seat");
    std::sync::Arc::clone(&fixture.runtime)
        .handle(message, seat)
        .await;

    assert_eq!(fixture.backend.executed(), 0);
    assert!(
        fixture.replier.replies().is_empty(),
        "answered another tenant"
    );
    assert_eq!(fixture.audit.recorded(), [AuditEventType::Rejected]);
}

/// Durable mode takes its slot without a waiting room (`Waiting::Unbounded`, or a slot it
/// reserved) and records its events in its own sink: the rule is the same.
#[tokio::test]
async fn a_durable_job_whose_events_are_not_recorded_does_not_run() {
    for refused in [AuditEventType::Received, AuditEventType::Started] {
        let fixture = Fixture::new(FakeAudit::working());
        let durable_audit = FakeAudit::refusing(refused);
        let durable = fixture.runtime.with_audit(durable_audit.clone());
        let reserved = fixture
            .runtime
            .slots()
            .try_acquire(TENANT)
            .expect("a free slot");
        for waiting in [Waiting::Unbounded, Waiting::Reserved(reserved)] {
            let processed = durable
                .process(TENANT, &Bytes::from(echo("j5")), None, waiting)
                .await;
            assert!(!processed.audited, "{refused:?}: counted as audited");
            assert_eq!(
                processed.result.error.as_ref().map(|error| error.kind),
                Some(ErrorKind::Internal),
                "{refused:?}"
            );
        }
        assert_eq!(fixture.backend.executed(), 0, "{refused:?}: the job ran");
        assert!(
            fixture.audit.recorded().is_empty(),
            "the core sink was used in durable mode"
        );
    }
}

#[tokio::test]
async fn a_runtime_with_another_audit_sink_shares_the_pool() {
    let fixture = Fixture::new(FakeAudit::working());
    let durable = fixture.runtime.with_audit(FakeAudit::working());
    let _slot = durable.slots().try_acquire(TENANT).expect("a free slot");
    assert_eq!(fixture.runtime.slots().in_use(), 1, "slots are not shared");
    let _guard = durable.running().register(TENANT, "j6").expect("registers");
    assert!(
        fixture.runtime.running().cancel(TENANT, "j6"),
        "running jobs are not shared"
    );
}

#[tokio::test]
async fn capabilities_are_asked_for_each_job_so_a_lost_one_refuses_before_started() {
    let fixture = Fixture::new(FakeAudit::working());
    let with_memory = |id: &str| {
        let mut request = ExecRequest::command(id, vec!["true".into()]);
        request.limits.memory = Some(openshell_protocol::ByteSize::mib(64));
        serde_json::to_vec(&request).expect("request encodes")
    };
    handle(&fixture, &with_memory("m1")).await;
    assert_eq!(fixture.backend.executed(), 1);

    fixture.backend.lose(LimitName::Memory);
    handle(&fixture, &with_memory("m2")).await;
    assert_eq!(fixture.backend.executed(), 1, "the second job ran");
    let (_, result) = fixture.replier.replies().pop().expect("a reply");
    assert_eq!(result.status, Verdict::Rejected, "{result:?}");
    assert_eq!(
        result.error.map(|error| error.kind),
        Some(ErrorKind::LimitNotEnforceable)
    );
    let second: Vec<AuditEventType> = fixture
        .audit
        .events()
        .into_iter()
        .filter(|event| event.job_id == "m2")
        .map(|event| event.event)
        .collect();
    assert_eq!(second, [AuditEventType::Rejected]);
}

#[tokio::test]
async fn a_streamed_job_publishes_its_output_in_order_before_its_result() {
    let fixture = Fixture::new(FakeAudit::working());
    let script = "printf one; sleep 0.2; printf two >&2; sleep 0.2; printf three";
    let mut request = ExecRequest::command("s1", vec!["sh".into(), "-c".into(), script.into()]);
    request.stream = true;
    handle(&fixture, &serde_json::to_vec(&request).expect("encodes")).await;

    let (_, result) = fixture.replier.replies().pop().expect("a result");
    assert_eq!(result.status, Verdict::Completed, "{result:?}");
    let chunks = fixture.replier.chunks();
    assert!(
        chunks.len() >= 3,
        "one chunk per pause at least: {chunks:?}"
    );
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for (seq, (subject, chunk, results_before)) in chunks.iter().enumerate() {
        assert_eq!(subject, "openshell.output.acme.s1");
        assert_eq!(chunk.seq, seq as u64, "numbered without gaps");
        assert_eq!(*results_before, 0, "a chunk came after the result");
        match chunk.stream {
            OutputStream::Stdout => stdout.extend_from_slice(&chunk.data.0),
            OutputStream::Stderr => stderr.extend_from_slice(&chunk.data.0),
        }
    }
    assert_eq!(
        stdout, result.stdout.0,
        "stdout chunks are the result's stdout"
    );
    assert_eq!(
        stderr, result.stderr.0,
        "stderr chunks are the result's stderr"
    );
    assert_eq!(stdout, b"onethree");

    // Without `stream`, nothing is published but the result.
    handle(&fixture, &echo("s2")).await;
    assert_eq!(fixture.replier.chunks().len(), chunks.len());
}
