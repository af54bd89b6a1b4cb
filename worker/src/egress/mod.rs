//! The egress proxy: a job's only way out of a sandbox without a network.
//!
//! For each job a pool holds to egress rules, [`EgressProxy::start`] makes a directory with a
//! Unix socket (`egress.sock`) and the in-sandbox forwarder (`forward.py`, see
//! [`openshell_backend::egress`]); the backend mounts the directory into the sandbox. Every
//! connection on the socket opens with one proxy request (`CONNECT host:port`, or a plain HTTP
//! request in absolute form, [`http`]); [`decide`] alone says whether it may go where it asks,
//! resolving names itself; [`pump`] moves the bytes, counted against the job's cap. Each
//! attempt ends as one [`NetworkAttempt`] on the channel given at start, which the job path
//! audits (`network` events) and counts.

pub mod decide;
pub mod http;
pub mod pump;
pub mod sni;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openshell_backend::EgressEndpoint;
use openshell_backend::egress::SOCKET;
use openshell_protocol::audit::NetworkAttempt;
use openshell_protocol::egress::HostPattern;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use decide::{Denied, EgressPolicy};
use http::BadRequest;
use pump::{Meter, pump};

/// Connections one job may open through the proxy; the next is refused (and audited) and the
/// proxy stops listening, so a job cannot flood the audit trail. Verdict `network_limit`.
pub const MAX_ATTEMPTS: usize = 1024;

/// Time a job's connection has to send its request, and the proxy to reach a destination.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// A running proxy for one job.
pub struct EgressProxy {
    dir: tempfile::TempDir,
    endpoint: EgressEndpoint,
    meter: Arc<Meter>,
    too_many: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
    accept: tokio::task::JoinHandle<()>,
}

/// What a job's traffic came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressSummary {
    /// Bytes moved, both directions, all connections.
    pub bytes: u64,
    /// Whether the job passed its byte cap (its connections were cut).
    pub over_limit: bool,
    /// Whether the job tried more than [`MAX_ATTEMPTS`] connections (the proxy stopped
    /// listening).
    pub too_many_attempts: bool,
}

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
#[error("egress proxy for job `{job}`: {what} in {dir}: {source}")]
pub struct StartError {
    /// The job.
    pub job: String,
    /// What failed.
    pub what: &'static str,
    /// Where.
    pub dir: String,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

impl EgressProxy {
    /// Starts the proxy of `job` under `parent` (a directory the sandbox runtime can mount);
    /// every attempt is sent on `attempts`.
    pub fn start(
        parent: &Path,
        job: &str,
        policy: EgressPolicy,
        attempts: mpsc::UnboundedSender<NetworkAttempt>,
    ) -> Result<Self, StartError> {
        let fail = |what, source| StartError {
            job: job.to_string(),
            what,
            dir: parent.display().to_string(),
            source,
        };
        std::fs::create_dir_all(parent).map_err(|e| fail("creating the parent directory", e))?;
        // Others on the host may pass through the parent but not list it, and cannot guess
        // a job's directory: its socket is open to every uid (the sandbox's is not ours).
        std::fs::set_permissions(parent, PermissionsExt::from_mode(0o711))
            .map_err(|e| fail("closing the parent directory", e))?;
        let dir = tempfile::Builder::new()
            .prefix("egress-")
            .rand_bytes(24)
            .tempdir_in(parent)
            .map_err(|e| fail("creating the job's directory", e))?;
        let names = transparent_names(&policy);
        let endpoint = EgressEndpoint {
            dir: dir.path().to_path_buf(),
            names,
        };
        endpoint
            .write_forwarder()
            .map_err(|e| fail("writing the forwarder", e))?;
        let socket = dir.path().join(SOCKET);
        let listener = UnixListener::bind(&socket).map_err(|e| fail("binding the socket", e))?;
        // The sandbox's user is not the worker's: the directory and socket must be reachable.
        let open =
            |path: &Path, mode| std::fs::set_permissions(path, PermissionsExt::from_mode(mode));
        open(dir.path(), 0o755).map_err(|e| fail("opening the directory", e))?;
        open(&socket, 0o666).map_err(|e| fail("opening the socket", e))?;
        let meter = Arc::new(Meter::new(policy.max_bytes));
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            policy,
            meter: Arc::clone(&meter),
            attempts,
            ended: stop.clone(),
            cut: stop.child_token(),
        });
        let too_many = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let accept = tokio::spawn(serve(listener, shared, stop.clone(), Arc::clone(&too_many)));
        Ok(Self {
            dir,
            endpoint,
            meter,
            too_many,
            stop,
            accept,
        })
    }

    /// What the backend mounts and serves.
    pub fn endpoint(&self) -> &EgressEndpoint {
        &self.endpoint
    }

    /// The socket's path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join(SOCKET)
    }

    /// Stops the proxy (the job ended), ends its open connections, and waits until every
    /// attempt was sent; the directory goes when this returns.
    pub async fn finish(self) -> EgressSummary {
        self.stop.cancel();
        let _ = self.accept.await;
        EgressSummary {
            bytes: self.meter.moved(),
            over_limit: self.meter.over(),
            too_many_attempts: self.too_many.load(std::sync::atomic::Ordering::SeqCst),
        }
    }
}

/// Exact names with one port each: the forwarder serves them on loopback addresses.
fn transparent_names(policy: &EgressPolicy) -> Vec<(String, u16)> {
    policy
        .rules
        .iter()
        .filter_map(|rule| match &rule.host {
            HostPattern::Name(name) if rule.port_low == rule.port_high => {
                Some((name.clone(), rule.port_low))
            }
            _ => None,
        })
        .collect()
}

struct Shared {
    policy: EgressPolicy,
    meter: Arc<Meter>,
    attempts: mpsc::UnboundedSender<NetworkAttempt>,
    /// Cancelled when the job ended.
    ended: CancellationToken,
    /// Ends every open connection: the job ended, or passed its cap.
    cut: CancellationToken,
}

async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
    too_many: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut connections = JoinSet::new();
    let mut accepted_count = 0usize;
    let mut listener = Some(listener);
    loop {
        let accept = async {
            match &listener {
                Some(listener) => listener.accept().await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = accept => {
                let Some((stream, _)) = accepted else { continue };
                accepted_count += 1;
                if accepted_count > MAX_ATTEMPTS {
                    // Refused, audited once, and no more listening: later attempts fail in
                    // the sandbox and never reach the audit trail.
                    too_many.store(true, std::sync::atomic::Ordering::SeqCst);
                    listener = None;
                    let _ = shared.attempts.send(NetworkAttempt {
                        reason: Some(format!(
                            "the job opened more than {MAX_ATTEMPTS} connections: the egress proxy stopped listening"
                        )),
                        ..attempt("", 0)
                    });
                    drop(stream);
                    continue;
                }
                connections.spawn(connection(stream, Arc::clone(&shared)));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stop.cancelled() => break,
        }
    }
    drop(listener);
    shared.cut.cancel();
    while connections.join_next().await.is_some() {}
}

/// One connection, start to end; sends its one attempt.
async fn connection(mut stream: UnixStream, shared: Arc<Shared>) {
    let attempt = handle(&mut stream, &shared).await;
    if !attempt.allowed {
        let reason = attempt.reason.as_deref().unwrap_or("denied");
        let body = format!("openshell egress proxy: {reason}\n");
        let reply = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
    tracing::debug!(?attempt, "egress attempt");
    let _ = shared.attempts.send(attempt);
}

fn attempt(host: &str, port: u16) -> NetworkAttempt {
    NetworkAttempt {
        destination: host.to_string(),
        port,
        allowed: false,
        address: None,
        bytes_sent: 0,
        bytes_received: 0,
        reason: None,
    }
}

async fn handle(stream: &mut UnixStream, shared: &Shared) -> NetworkAttempt {
    let head = tokio::select! {
        head = tokio::time::timeout(HANDSHAKE, http::read_head(stream)) => head.unwrap_or(Err(BadRequest::Incomplete)),
        () = shared.ended.cancelled() => Err(BadRequest::Incomplete),
    };
    let (request, early) = match head {
        Ok(head) => head,
        Err(bad) => {
            return NetworkAttempt {
                reason: Some(bad.to_string()),
                ..attempt("", 0)
            };
        }
    };
    let mut record = attempt(&request.host, request.port);
    if shared.meter.over() {
        record.reason = Some("the job passed its egress byte limit".into());
        return record;
    }
    let addresses = match shared.policy.decide(&request.host, request.port).await {
        Ok(addresses) => addresses,
        Err(denied) => {
            record.reason = Some(denied.to_string());
            return record;
        }
    };
    record.allowed = true;
    let (mut upstream, address) = match connect(&addresses).await {
        Ok(pair) => pair,
        Err(reason) => {
            record.reason = Some(reason);
            let _ = stream
                .write_all(
                    b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                )
                .await;
            return record;
        }
    };
    record.address = Some(address.to_string());
    let opening = match &request.forward {
        None => {
            if stream
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .is_err()
            {
                return record;
            }
            early
        }
        Some(head) => [head.as_slice(), early.as_slice()].concat(),
    };
    // A tunnel to a name: a TLS handshake in it must be for an allowed name too. What the job
    // sent with its CONNECT is checked here; otherwise its first bytes, in the pump.
    let tunnel = request.forward.is_none();
    let tls_name = |bytes: &[u8]| sni_refusal(&shared.policy, &request, bytes);
    if let Some(reason) = (tunnel && !opening.is_empty())
        .then(|| tls_name(&opening))
        .flatten()
    {
        record.allowed = false;
        record.reason = Some(reason);
        return record;
    }
    if !shared.meter.take(opening.len() as u64) {
        shared.cut.cancel();
        record.reason = Some("the job passed its egress byte limit".into());
        return record;
    }
    if upstream.write_all(&opening).await.is_err() {
        return record;
    }
    let (from_job, to_job) = stream.split();
    let (from_dest, to_dest) = upstream.split();
    let stop = shared.cut.child_token();
    let tokens = (&stop, &shared.cut);
    let check: Option<pump::FirstCheck<'_>> = (tunnel && opening.is_empty()).then_some(&tls_name);
    let ((sent, refused), (received, _)) = tokio::join!(
        pump(from_job, to_dest, &shared.meter, tokens, check),
        pump(from_dest, to_job, &shared.meter, tokens, None),
    );
    record.bytes_sent = sent + opening.len() as u64;
    record.bytes_received = received;
    if let Some(reason) = refused {
        record.allowed = false;
        record.reason = Some(reason);
    } else if shared.meter.over() {
        record.reason = Some("cut: the job passed its egress byte limit".into());
    }
    record
}

/// Why a tunnel to `request`'s host may not carry `bytes`: a TLS ClientHello for a name no
/// rule allows at the port, other than the tunnel's own. Tunnels to addresses are not checked
/// (a CIDR rule allows any name there).
fn sni_refusal(
    policy: &EgressPolicy,
    request: &http::ProxyRequest,
    bytes: &[u8],
) -> Option<String> {
    let host = openshell_protocol::egress::normalize(&request.host);
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return None;
    }
    let name = openshell_protocol::egress::normalize(&sni::server_name(bytes)?);
    let allowed = name == host
        || policy
            .rules
            .iter()
            .any(|rule| rule.allows_name(&name, request.port));
    (!allowed).then(|| {
        format!(
            "the TLS handshake in the tunnel to {host}:{} asks for {name}, which is not in the job's egress rules",
            request.port
        )
    })
}

async fn connect(addresses: &[SocketAddr]) -> Result<(TcpStream, SocketAddr), String> {
    let mut last = String::from("no address");
    for address in addresses {
        match tokio::time::timeout(HANDSHAKE, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Ok((stream, *address)),
            Ok(Err(error)) => last = format!("connecting to {address}: {error}"),
            Err(_) => last = format!("connecting to {address}: timed out"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests;
