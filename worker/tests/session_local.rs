//! Sessions on the local backend (`none`, with its bubblewrap sandbox) through a real
//! nats-server and `openshell worker`: the scenarios of `sessions/` (state and files persist,
//! a stopped kernel cell restarts the kernel, one job at a time, another tenant cannot reach
//! the session, the cap, idle expiry, a lost sandbox and close leave no process or directory,
//! a killed worker gives `session_lost`), and the typed errors of a pool without sessions.
//! Needs nats-server, and a root test run with bubblewrap for the scenarios.

mod sessions;

use openshell_protocol::session::SessionOpen;
use openshell_protocol::{Client, ErrorKind};
use openshell_test_support::nats::NatsServer;

use sessions::{Backend, OPENSHELL, session_error};

/// Pool `none` with the local sandbox off: no sandbox to hold, so no sessions.
const UNSANDBOXED: &str =
    "[pools.none]\nbackend = \"none\"\n\n[pools.none.local]\nsandbox = \"off\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_session_keeps_state_and_files_and_ends_without_a_trace() {
    sessions::keeps_state_and_files_and_ends_without_a_trace(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_expiry_and_shutdown_destroy_the_sandbox_and_tell_the_owner() {
    sessions::expiry_and_shutdown_destroy_the_sandbox_and_tell_the_owner(Backend::Local).await;
}

/// A pool whose backend holds no sessions (`none` without its sandbox) refuses them with a
/// typed error, and a malformed open is `invalid_request`.
#[tokio::test(flavor = "multi_thread")]
async fn a_pool_without_sessions_and_a_bad_open_get_typed_errors() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("worker.toml");
    std::fs::write(&config, UNSANDBOXED).expect("worker config");
    let config = config.display().to_string();
    let url = nats.url();
    let _worker = OPENSHELL
        .worker(&[
            ("NATS_URL", url.as_str()),
            ("OPENSHELL_CONFIG", config.as_str()),
        ])
        .await;
    let client = Client::connect(&nats.url()).await.expect("client connects");
    let refused = client
        .open_session("none", "acme", &SessionOpen::default())
        .await
        .expect_err("an unsandboxed none holds no sessions");
    assert_eq!(session_error(refused), ErrorKind::SessionsUnsupported);
    let reply = client
        .nats()
        .request(
            client.subjects().session_open("none", "acme"),
            r#"{"version": 1, "kernal": "python"}"#.into(),
        )
        .await
        .expect("answered");
    let answer: openshell_protocol::session::SessionError =
        serde_json::from_slice(&reply.payload).expect("a SessionError");
    assert_eq!(answer.error.kind, ErrorKind::InvalidRequest, "{answer:?}");
}
