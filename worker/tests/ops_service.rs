//! The NATS micro service API against real processes: two workers answer `$SRV.PING`,
//! `$SRV.INFO` and `$SRV.STATS`, and `openshell workers` lists them.

use std::time::Duration;

use futures::StreamExt;
use openshell_test_support::nats::NatsServer;
use openshell_test_support::{Openshell, WorkerProcess};

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

/// Every reply to `subject` within one second.
async fn gather(client: &async_nats::Client, subject: &str) -> Vec<serde_json::Value> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish_with_reply(subject.to_string(), inbox, "".into())
        .await
        .expect("publish");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
        out.push(serde_json::from_slice(&message.payload).expect("JSON reply"));
    }
    out
}

async fn worker(nats: &NatsServer, id: &str) -> WorkerProcess {
    let url = nats.url();
    OPENSHELL
        .worker(&[
            ("NATS_URL", url.as_str()),
            ("SANDBOX_BACKEND", "none"),
            ("OPENSHELL_WORKER_ID", id),
            ("OPENSHELL_SLOTS", "3"),
        ])
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_answer_ping_info_and_stats() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let _a = worker(&nats, "worker-a").await;
    let _b = worker(&nats, "worker-b").await;
    let client = async_nats::connect(nats.url()).await.expect("connect");

    let pings = gather(&client, "$SRV.PING.openshell").await;
    assert_eq!(pings.len(), 2, "{pings:?}");
    let infos = gather(&client, "$SRV.INFO.openshell").await;
    let mut ids: Vec<_> = infos
        .iter()
        .map(|info| {
            info["metadata"]["worker_id"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["worker-a", "worker-b"]);
    for info in &infos {
        assert_eq!(info["metadata"]["pools"], "none");
        assert_eq!(info["metadata"]["backends"], "none");
        assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    }
    let stats = gather(&client, "$SRV.STATS.openshell").await;
    assert_eq!(stats.len(), 2);
    let data = &stats[0]["endpoints"][0]["data"];
    assert_eq!(data["pools"][0]["slots"], 3, "{data}");
    assert_eq!(data["pools"][0]["healthy"], true, "{data}");
    assert_eq!(data["ready"], true);

    let url = nats.url();
    let out = OPENSHELL
        .cli(["workers", "--json"], &[("NATS_URL", url.as_str())])
        .await;
    assert!(out.status.success(), "{out:?}");
    let listed: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("workers --json prints JSON");
    let ids: Vec<_> = listed.iter().map(|w| w["worker_id"].clone()).collect();
    assert_eq!(ids, ["worker-a", "worker-b"]);

    let table = OPENSHELL
        .cli(["workers"], &[("NATS_URL", url.as_str())])
        .await;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("worker-a") && text.contains("healthy") && text.contains("0/3"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_fails_when_none_answers() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let out = OPENSHELL
        .cli(
            ["workers", "--wait", "300ms"],
            &[("NATS_URL", url.as_str())],
        )
        .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no worker answered"),
        "{out:?}"
    );
}
