//! Sessions on the SSH backend through a real nats-server, a real sshd on this machine (set
//! up by deploy/ssh-host/prepare.sh) and `openshell worker`: the scenarios of `sessions/`
//! (state and files persist, a stopped kernel cell restarts the kernel, one job at a time,
//! another tenant cannot reach the session, the cap, idle expiry, a lost sandbox and close
//! leave no process or record on the host, a killed worker gives `session_lost`). Needs root,
//! sshd, sudo and bubblewrap.

mod sessions;

use sessions::Backend;

/// Stops the test's sshd when the test ends, passed or not.
struct StopSshd;

impl Drop for StopSshd {
    fn drop(&mut self) {
        sessions::stop_sshd();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_keeps_state_and_files_and_ends_without_a_trace() {
    let _stop = StopSshd;
    sessions::keeps_state_and_files_and_ends_without_a_trace(Backend::Ssh).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_expiry_and_shutdown_destroy_the_sandbox_and_tell_the_owner() {
    let _stop = StopSshd;
    sessions::expiry_and_shutdown_destroy_the_sandbox_and_tell_the_owner(Backend::Ssh).await;
}
