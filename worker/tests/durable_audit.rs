//! Durable mode audits before it runs: with the audit stream gone no code runs, and the job
//! runs once the stream is back.

mod durable;

use std::time::Duration;

use openshell_protocol::{AuditEventType, Verdict};
use openshell_test_support::nats::NatsServer;
use openshell_worker::config::DurableConfig;
use openshell_worker::durable::DurableSubjects;
use openshell_worker::durable::streams::{self, AUDIT};

#[tokio::test(flavor = "multi_thread")]
async fn no_code_runs_without_the_audit_stream() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    // The default max_deliver (3): jobs put back while the audit stream is gone do not use it up.
    let worker = durable::worker(&nats, "w1", &[]).await;
    let (connection, client) = durable::client(&nats).await;
    let jetstream = async_nats::jetstream::new(connection.clone());
    jetstream
        .delete_stream(AUDIT)
        .await
        .expect("remove the audit stream");

    let job =
        openshell_protocol::ExecRequest::command("audited", vec!["echo".into(), "ran".into()]);
    client
        .submit("none", "acme", &job, None)
        .await
        .expect("submit");
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(
        client
            .result("acme", "audited", Duration::ZERO)
            .await
            .expect("read")
            .is_none(),
        "the job ran without its audit event"
    );
    assert!(
        !worker.logs().contains("job finished")
            && worker.logs().contains("audit stream unavailable"),
        "{}",
        worker.logs()
    );

    let [_, _, audit] = streams::configs(
        &DurableSubjects::new("openshell"),
        &DurableConfig::default(),
    );
    jetstream
        .create_stream(audit)
        .await
        .expect("recreate the audit stream");
    let result = client
        .result("acme", "audited", Duration::from_secs(20))
        .await
        .expect("read")
        .expect("the job ran once the audit stream was back");
    assert_eq!(result.status, Verdict::Completed);
    assert_eq!(result.stdout.to_text_lossy(), "ran\n");
    let received = durable::audit_events(&connection)
        .await
        .into_iter()
        .filter(|event| event.job_id == "audited" && event.event == AuditEventType::Received)
        .count();
    assert_eq!(received, 1);
}
