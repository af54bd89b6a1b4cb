//! The worker as a library, against a real nats-server: `Worker::start` with a backend the
//! caller registered (the example backend of `examples/nice-backend/`, exactly as README's
//! "yours" row says) serves jobs on it, and stops taking them on shutdown; a pool naming a
//! backend nobody registered fails the start with a typed error.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openshell_backend::{Backend, BackendKind};
use openshell_backend_local::LocalBackend;
use openshell_example_nice_backend::NiceBackend;
use openshell_protocol::{ExecRequest, ExecResult, Verdict};
use openshell_test_support::nats::NatsServer;
use openshell_worker::config::{Config, PoolConfig};
use openshell_worker::registry::BackendRegistry;
use openshell_worker::{Worker, WorkerError};

/// One pool `pool` on backend `backend`, on `nats`, metrics on a free port.
fn config(nats: &NatsServer, pool: &str, backend: &str) -> Config {
    let mut config = Config::default();
    config.nats.urls = vec![nats.url()];
    config.worker.id = "library-worker".to_string();
    config.worker.metrics_addr = "127.0.0.1:0".parse().expect("address");
    let pool_config = PoolConfig::for_backend(BackendKind::Other(backend.to_string()));
    config.pools.insert(pool.to_string(), pool_config);
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registered_backend_serves_jobs_until_shutdown() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    // The pool's own settings reach the registered backend: here its `local` section.
    let registry =
        BackendRegistry::new().register("nice", |pool: PoolConfig, _context| async move {
            let local = LocalBackend::new(pool.local)?;
            Ok(Arc::new(NiceBackend::new(local)) as Arc<dyn Backend>)
        });
    let worker = Worker::start(config(&nats, "batch", "nice"), registry)
        .await
        .expect("the worker starts");
    assert_eq!(worker.worker_id(), "library-worker");
    assert_eq!(worker.pools(), ["batch"]);
    assert_ne!(
        worker.metrics_addr().port(),
        0,
        "the bound port is reported"
    );

    let client = async_nats::connect(nats.url()).await.expect("connect");
    // `nice` with no arguments prints the niceness it runs at.
    let request = ExecRequest::command("lib-1", vec!["nice".into()]);
    let payload = Bytes::from(serde_json::to_vec(&request).expect("encode"));
    let reply = client
        .request("openshell.exec.batch.acme", payload.clone())
        .await
        .expect("a reply");
    let result: ExecResult = serde_json::from_slice(&reply.payload).expect("a result");
    assert_eq!(result.status, Verdict::Completed, "{result:?}");
    assert_eq!(result.stdout.to_text_lossy(), "19\n");
    assert_eq!(
        (result.backend.as_str(), result.worker_id.as_str()),
        ("nice", "library-worker")
    );

    tokio::time::timeout(Duration::from_secs(30), worker.shutdown())
        .await
        .expect("the worker drains within 30 s");
    let after = tokio::time::timeout(
        Duration::from_secs(5),
        client.request("openshell.exec.batch.acme", payload),
    )
    .await;
    assert!(
        !matches!(after, Ok(Ok(_))),
        "a stopped worker still answered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_on_an_unregistered_backend_fails_the_start() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let error = Worker::start(config(&nats, "podmen", "podman"), BackendRegistry::new())
        .await
        .expect_err("no backend named podman");
    assert!(
        matches!(&error, WorkerError::Backend { pool, .. } if pool == "podmen"),
        "{error:?}"
    );
    let chain = format!("{:#}", anyhow::Error::from(error));
    assert!(
        chain.starts_with("pool `podmen`: ") && chain.contains("no backend named `podman`"),
        "{chain}"
    );
}
