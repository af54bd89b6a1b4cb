//! Sessions on the Docker backend through a real nats-server and `openshell worker`: the
//! scenarios of `sessions/` (state and files persist, a stopped kernel cell restarts the
//! kernel, one job at a time, another tenant cannot reach the session, the cap, idle expiry
//! and close leave no container, a killed worker gives `session_lost`). Needs nats-server,
//! dockerd and the sandbox image.

mod sessions;

use sessions::Backend;

#[tokio::test(flavor = "multi_thread")]
async fn a_session_keeps_state_and_files_and_ends_without_a_trace() {
    sessions::keeps_state_and_files_and_ends_without_a_trace(Backend::Docker).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_expiry_and_shutdown_destroy_the_sandbox_and_tell_the_owner() {
    sessions::expiry_and_shutdown_destroy_the_sandbox_and_tell_the_owner(Backend::Docker).await;
}
