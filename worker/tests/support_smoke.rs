//! The test-support crate starts a real nats-server that survives a restart.

use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use openshell_test_support::nats::NatsServer;

#[tokio::test]
async fn nats_server_roundtrip_and_restart_keeps_jetstream_store() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    assert!(nats.url().ends_with(&format!(":{}", nats.port())));
    roundtrip(&nats.url()).await;

    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client);
    js.create_stream(jetstream::stream::Config {
        name: "SMOKE".into(),
        subjects: vec!["smoke.>".into()],
        ..Default::default()
    })
    .await
    .expect("create stream");
    js.publish("smoke.one", "kept".into())
        .await
        .expect("publish")
        .await
        .expect("ack");

    let port = nats.port();
    nats.restart().await;
    assert_eq!(nats.port(), port, "restart keeps the port");
    roundtrip(&nats.url()).await;

    let client = async_nats::connect(nats.url()).await.expect("reconnect");
    let mut stream = jetstream::new(client)
        .get_stream("SMOKE")
        .await
        .expect("stream survives");
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.state.messages, 1, "restart keeps the JetStream store");
}

#[tokio::test]
async fn stopped_nats_server_refuses_connections() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    nats.stop().await;
    let refused = std::net::TcpStream::connect(("127.0.0.1", nats.port())).is_err();
    assert!(refused, "port {} still open after stop", nats.port());
}

/// Subscribes, publishes, and expects the message back within a few seconds.
async fn roundtrip(url: &str) {
    let client = async_nats::connect(url).await.expect("connect");
    let mut sub = client.subscribe("support.ping").await.expect("subscribe");
    client.flush().await.expect("flush subscription");
    client
        .publish("support.ping", "hello".into())
        .await
        .expect("publish");
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("message within 5 s")
        .expect("subscription open");
    assert_eq!(msg.payload.as_ref(), b"hello");
}
