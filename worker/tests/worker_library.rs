//! The worker as a library, against a real nats-server: `Worker::start` with a backend the
//! caller registered serves jobs on it, and stops taking them on shutdown; a pool naming a
//! backend nobody registered fails the start with a typed error.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use openshell_backend::{
    Backend, BackendError, BackendKind, Capabilities, Execution, Job, JobControl, Stream,
};
use openshell_protocol::{ExecRequest, ExecResult, Verdict};
use openshell_worker::config::{Config, PoolConfig};
use openshell_worker::registry::BackendRegistry;
use openshell_worker::{Worker, WorkerError};
use support::nats::NatsServer;

/// A backend written outside the worker: prints its argv instead of running it.
struct Echo;

#[async_trait]
impl Backend for Echo {
    fn kind(&self) -> &'static str {
        "echo"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
    }

    async fn health(&self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn execute(&self, job: Job, control: JobControl) -> Result<Execution, BackendError> {
        control
            .output
            .write(Stream::Stdout, job.argv.join(" ").as_bytes());
        Ok(Execution::exited(0))
    }
}

/// One pool `pool` on backend `backend`, on `nats`, metrics on a free port.
fn config(nats: &NatsServer, pool: &str, backend: &str) -> Config {
    let mut config = Config::default();
    config.nats.urls = vec![nats.url()];
    config.worker.id = "library-worker".to_string();
    config.worker.metrics_addr = "127.0.0.1:0".parse().expect("address");
    let mut pool_config = PoolConfig::for_backend(BackendKind::Other(backend.to_string()));
    // Echo enforces nothing; the pool says that is fine.
    pool_config.allow_unenforced_limits = true;
    config.pools.insert(pool.to_string(), pool_config);
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registered_backend_serves_jobs_until_shutdown() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let registry = BackendRegistry::new().register("echo", |_pool, _context| async {
        Ok(Arc::new(Echo) as Arc<dyn Backend>)
    });
    let worker = Worker::start(config(&nats, "echoes", "echo"), registry)
        .await
        .expect("the worker starts");
    assert_eq!(worker.worker_id(), "library-worker");
    assert_eq!(worker.pools(), ["echoes"]);
    assert_ne!(
        worker.metrics_addr().port(),
        0,
        "the bound port is reported"
    );

    let client = async_nats::connect(nats.url()).await.expect("connect");
    let request = ExecRequest::command("lib-1", vec!["echo".into(), "hello".into()]);
    let payload = Bytes::from(serde_json::to_vec(&request).expect("encode"));
    let reply = client
        .request("openshell.exec.echoes.acme", payload.clone())
        .await
        .expect("a reply");
    let result: ExecResult = serde_json::from_slice(&reply.payload).expect("a result");
    assert_eq!(result.status, Verdict::Completed, "{result:?}");
    assert_eq!(result.stdout.to_text_lossy(), "echo hello");
    assert_eq!(
        (result.backend.as_str(), result.worker_id.as_str()),
        ("echo", "library-worker")
    );

    tokio::time::timeout(Duration::from_secs(30), worker.shutdown())
        .await
        .expect("the worker drains within 30 s");
    let after = tokio::time::timeout(
        Duration::from_secs(5),
        client.request("openshell.exec.echoes.acme", payload),
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
