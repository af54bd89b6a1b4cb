//! Opening one authenticated connection: TCP, handshake with the host key verified against
//! known_hosts, then public-key authentication.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use russh::Channel;
use russh::client::{self, ChannelOpenHandle, Handle, Msg, Session};
use russh::keys::{Algorithm, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{Preferred, SshId};

use super::egress::Routes;
use super::error::SshError;
use super::known_hosts::{self, HostId};
use super::settings::SshSettings;

/// An authenticated connection's handle.
pub type SshHandle = Handle<Client>;

/// Everything needed to connect to one host.
#[derive(Debug, Clone)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Remote user.
    pub user: String,
    /// The client key.
    pub key: Arc<PrivateKey>,
    /// Where the key came from, for messages.
    pub key_path: PathBuf,
    /// The known_hosts file.
    pub known_hosts: PathBuf,
    /// Trust a host on first use.
    pub accept_new: bool,
    /// Time allowed for TCP, handshake and authentication together.
    pub connect_timeout: Duration,
    /// Keepalive interval.
    pub keepalive: Duration,
    /// Unanswered keepalives before the connection is dropped.
    pub keepalive_max: usize,
}

impl Target {
    /// The target for `host:port` under `settings`, with the loaded `key`.
    pub fn new(settings: &SshSettings, (host, port): (String, u16), key: Arc<PrivateKey>) -> Self {
        Self {
            host,
            port,
            user: settings.user.clone(),
            key,
            key_path: settings.key_path.clone().unwrap_or_default(),
            known_hosts: settings.known_hosts_path(),
            accept_new: settings.accept_new_host_keys,
            connect_timeout: settings.connect_timeout.as_duration(),
            keepalive: settings.keepalive.as_duration(),
            keepalive_max: settings.keepalive_max,
        }
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn id(&self) -> HostId<'_> {
        HostId {
            host: &self.host,
            port: self.port,
        }
    }
}

/// The russh event handler: verifies the host key and remembers why it refused one.
#[derive(Debug)]
pub struct Client {
    target: Target,
    refusal: Arc<Mutex<Option<SshError>>>,
    routes: Routes,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        presented: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = presented else {
            self.refuse(SshError::Unreachable {
                addr: self.target.addr(),
                cause: "the host presented a certificate; OpenShell verifies plain host keys against known_hosts".into(),
            });
            return Ok(false);
        };
        let target = &self.target;
        match known_hosts::verify(&target.id(), key, &target.known_hosts, target.accept_new) {
            Ok(()) => Ok(true),
            Err(error) => {
                self.refuse(error);
                Ok(false)
            }
        }
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _: &mut Session,
    ) -> Result<(), Self::Error> {
        // Only a job's socket: dropping the reply refuses any other.
        if let Some(local) = self.routes.local(socket_path) {
            reply.accept().await;
            Routes::serve(channel, local);
        }
        Ok(())
    }
}

impl Client {
    fn refuse(&self, error: SshError) {
        *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
    }
}

/// Connects to and authenticates with `target` within its connect timeout; egress sockets
/// sshd forwards on the connection go where `routes` says.
pub async fn connect(target: &Target, routes: Routes) -> Result<SshHandle, SshError> {
    let refusal = Arc::new(Mutex::new(None));
    let client = Client {
        target: target.clone(),
        refusal: refusal.clone(),
        routes,
    };
    let attempt = async {
        let handle = client::connect(config(target), (target.host.as_str(), target.port), client)
            .await
            .map_err(|error| {
                refusal
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                    .unwrap_or_else(|| SshError::Unreachable {
                        addr: target.addr(),
                        cause: error.to_string(),
                    })
            })?;
        authenticate(target, handle).await
    };
    tokio::time::timeout(target.connect_timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(SshError::Unreachable {
                addr: target.addr(),
                cause: format!(
                    "no authenticated connection within connect_timeout = {:?}",
                    target.connect_timeout
                ),
            })
        })
}

async fn authenticate(target: &Target, mut handle: SshHandle) -> Result<SshHandle, SshError> {
    let lost = |error: russh::Error| SshError::Unreachable {
        addr: target.addr(),
        cause: format!("authentication failed: {error}"),
    };
    let hash = if target.key.algorithm().is_rsa() {
        handle
            .best_supported_rsa_hash()
            .await
            .map_err(lost)?
            .flatten()
    } else {
        None
    };
    let key = PrivateKeyWithHashAlg::new(target.key.clone(), hash);
    let result = handle
        .authenticate_publickey(target.user.clone(), key)
        .await
        .map_err(lost)?;
    if result.success() {
        Ok(handle)
    } else {
        Err(SshError::AuthRefused {
            addr: target.addr(),
            user: target.user.clone(),
            key: target.key_path.display().to_string(),
        })
    }
}

fn config(target: &Target) -> Arc<client::Config> {
    let recorded = known_hosts::recorded_algorithms(&target.id(), &target.known_hosts);
    Arc::new(client::Config {
        client_id: SshId::Standard(
            format!("SSH-2.0-OpenShell_{}", env!("CARGO_PKG_VERSION")).into(),
        ),
        keepalive_interval: Some(target.keepalive),
        keepalive_max: target.keepalive_max,
        nodelay: true,
        preferred: Preferred {
            key: host_key_order(&recorded).into(),
            ..Preferred::default()
        },
        ..client::Config::default()
    })
}

/// The default host key algorithms, those known_hosts records for the host first, so a host
/// known by its RSA key is not refused for offering ed25519 first (OpenSSH does the same).
fn host_key_order(recorded: &[Algorithm]) -> Vec<Algorithm> {
    let defaults = Preferred::default().key.into_owned();
    let known = |algorithm: &Algorithm| {
        recorded.iter().any(|wanted| {
            wanted == algorithm || (wanted.clone().is_rsa() && algorithm.clone().is_rsa())
        })
    };
    let (first, rest): (Vec<_>, Vec<_>) = defaults.into_iter().partition(known);
    first.into_iter().chain(rest).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_algorithms_come_first() {
        let order = host_key_order(&[Algorithm::Rsa { hash: None }]);
        assert!(order[0].clone().is_rsa() && order[1].clone().is_rsa());
        assert!(order.contains(&Algorithm::Ed25519));
        assert_eq!(host_key_order(&[])[0], Algorithm::Ed25519);
    }
}
