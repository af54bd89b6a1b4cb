//! Carrying a job's egress proxy socket to its SSH host. Before the job, the worker makes a
//! directory on the host (`/tmp/openshell-egress-N`, mode 0711, N random) holding the
//! forwarder, its configuration and the hosts file, and asks sshd to listen on `egress.sock`
//! there for it (`streamlocal-forward@openssh.com`, on the job's own pooled connection). The
//! sandbox helper binds that directory at [`SANDBOX_DIR`] in a sandbox without network; each
//! connection the job makes to the socket arrives back here as a forwarded channel, which
//! [`Routes`] hands to the worker's proxy socket of that job, so the worker's proxy alone
//! decides and audits, as for Docker.
//!
//! [`SANDBOX_DIR`]: openshell_backend::egress::SANDBOX_DIR

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use russh::Channel;
use russh::client::Msg;

use super::channel;
use super::error::SshError;
use super::files;
use super::pool::Connection;
use super::request::quote;
use openshell_backend::EgressEndpoint;
use openshell_backend::egress::{FORWARDER, FORWARDER_CONFIG, HOSTS, SOCKET};

/// Where the egress directories live on the host; the helper accepts no other.
pub const REMOTE_PREFIX: &str = "/tmp/openshell-egress-";
/// Time for making or removing the directory.
const COMMAND_LIMIT: Duration = Duration::from_secs(10);

/// Sockets on one connection's host that sshd forwards here, each to the worker-side proxy
/// socket of one job. Shared by the connection's handler and the jobs running on it; a
/// channel for any other path is refused.
#[derive(Debug, Clone, Default)]
pub struct Routes(Arc<Mutex<HashMap<String, PathBuf>>>);

impl Routes {
    fn insert(&self, remote: String, local: PathBuf) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(remote, local);
    }

    fn remove(&self, remote: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(remote);
    }

    /// The job's proxy socket on the worker for socket `remote` on the host, if it is a job's.
    pub fn local(&self, remote: &str) -> Option<PathBuf> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(remote)
            .cloned()
    }

    /// Connects a channel sshd opened for a job's socket to that job's proxy socket `local`,
    /// in a task of its own; a proxy that is gone closes the channel.
    pub fn serve(channel: Channel<Msg>, local: PathBuf) {
        tokio::spawn(async move {
            match tokio::net::UnixStream::connect(&local).await {
                Ok(mut proxy) => {
                    let mut stream = channel.into_stream();
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut proxy).await;
                }
                Err(error) => {
                    tracing::warn!(socket = %local.display(), "egress proxy unreachable: {error}");
                    let _ = channel.close().await;
                }
            }
        });
    }
}

/// A job's egress directory on its host and the forwarding of its socket; [`Remote::close`]
/// removes both (and so does dropping it, in a task of its own, should the job's future be
/// dropped).
pub struct Remote {
    /// The number in the directory's name, passed to the helper as `egress=N`.
    pub number: u64,
    dir: String,
    connection: Arc<Connection>,
    open: bool,
}

impl Remote {
    /// Makes the directory for `endpoint` on `connection`'s host and has sshd listen on its
    /// socket for the worker.
    pub async fn open(
        connection: &Arc<Connection>,
        endpoint: &EgressEndpoint,
    ) -> Result<Remote, SshError> {
        // Random, at most 18 digits, as the helper's request lines take.
        let number = files::token();
        let dir = format!("{REMOTE_PREFIX}{number}");
        let setup_error = |cause: String| SshError::Setup {
            addr: connection.addr.clone(),
            cause,
        };
        let mut command = format!("umask 022 && mkdir -m 0711 {}", quote(&dir));
        for file in [FORWARDER, FORWARDER_CONFIG, HOSTS] {
            let text = std::fs::read_to_string(endpoint.dir.join(file)).map_err(|error| {
                setup_error(format!(
                    "reading the job's egress file {file} on the worker failed: {error}"
                ))
            })?;
            command.push_str(&format!(
                " && printf %s {} > {}/{file}",
                quote(&text),
                quote(&dir)
            ));
        }
        let remote = Remote {
            number,
            dir: dir.clone(),
            connection: connection.clone(),
            open: true,
        };
        let made = channel::run(&connection.handle, &command, COMMAND_LIMIT).await;
        match made {
            Ok(output) if output.status == Some(0) => {}
            Ok(output) => {
                remote.close().await;
                return Err(setup_error(format!(
                    "making the job's egress directory {dir} failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                )));
            }
            Err(cause) => {
                remote.close().await;
                return Err(setup_error(format!(
                    "making the job's egress directory {dir} failed: {cause}"
                )));
            }
        }
        let socket = remote.socket();
        connection
            .routes
            .insert(socket.clone(), endpoint.dir.join(SOCKET));
        if let Err(error) = connection.handle.streamlocal_forward(socket).await {
            remote.close().await;
            return Err(setup_error(format!(
                "sshd would not forward the job's egress socket ({error}): allow it with \
                 `AllowStreamLocalForwarding remote` for the transport user (run \
                 deploy/ssh-host/prepare.sh from the worker's release)"
            )));
        }
        Ok(remote)
    }

    fn socket(&self) -> String {
        format!("{}/{SOCKET}", self.dir)
    }

    /// Stops the forwarding and removes the directory.
    pub async fn close(mut self) {
        self.open = false;
        remove(self.connection.clone(), self.dir.clone()).await;
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(remove(self.connection.clone(), self.dir.clone()));
        }
    }
}

/// Stops forwarding the socket in `dir` and removes `dir` (best effort: a host that is gone
/// loses them with its /tmp).
async fn remove(connection: Arc<Connection>, dir: String) {
    let socket = format!("{dir}/{SOCKET}");
    connection.routes.remove(&socket);
    let _ = connection.handle.cancel_streamlocal_forward(&socket).await;
    let command = format!("rm -rf {}", quote(&dir));
    if let Err(cause) = channel::run(&connection.handle, &command, COMMAND_LIMIT).await {
        tracing::warn!(host = %connection.addr, %dir, "removing a job's egress directory failed: {cause}");
    }
}
