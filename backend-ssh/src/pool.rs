//! Pooled connections to one host, handed out as *channel leases*.
//!
//! The deadpool objects are leases, not connections: each lease reserves one of a
//! connection's `channels_per_connection` exec channels. Creating a lease reuses a live
//! connection with room, or opens a new one (serialised per host, so a burst of jobs fills
//! connection after connection instead of opening one each). N concurrent jobs thus hold
//! N leases on about N / channels_per_connection connections. A lease whose connection broke
//! (keepalive timeout, closed handle, failed channel) fails recycling and is dropped, and the
//! connection goes away with its last lease. Opening a connection after one was lost counts
//! as a reconnect (`openshell_ssh_reconnects_total`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tokio::sync::{Mutex, Semaphore};

use super::connect::{self, SshHandle, Target};
use super::egress::Routes;
use super::error::SshError;
use super::probe::{self, HostProbe};
use super::runner::Runners;
use super::settings::SSHD_MAX_SESSIONS;
use openshell_backend::{BackendEvent, BackendMetrics};

/// A deadpool pool of channel leases on one host.
pub type LeasePool = managed::Pool<LeaseManager>;
/// A lease checked out of the pool; returns to it when dropped.
pub type PooledLease = managed::Object<LeaseManager>;

/// One authenticated connection and what it carries.
pub struct Connection {
    /// Serial number, for logs and tests.
    pub id: u64,
    /// The russh handle.
    pub handle: SshHandle,
    /// host:port.
    pub addr: String,
    /// What the probe found on this host.
    pub probe: HostProbe,
    /// Room for short channels (kills) beside the jobs' channels, below MaxSessions.
    pub spare: Semaphore,
    /// Where the egress sockets sshd forwards on this connection go.
    pub routes: Routes,
    /// Idle resident runners (`sandbox serve`) on this connection.
    pub runners: Runners,
    /// Channels jobs may hold at once (`channels_per_connection`).
    pub channels: usize,
    leases: AtomicUsize,
    broken: AtomicBool,
}

impl Connection {
    /// Usable for new channels.
    pub fn alive(&self) -> bool {
        !self.broken.load(Ordering::Relaxed) && !self.handle.is_closed()
    }

    /// Leases out on this connection now.
    pub fn leases(&self) -> usize {
        self.leases.load(Ordering::Relaxed)
    }

    /// Marks the connection unusable; it is replaced once its leases are returned.
    pub fn mark_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }
}

/// The right to run one job's channel on `connection`.
pub struct Lease {
    /// The connection the channel goes on.
    pub connection: Arc<Connection>,
}

impl Lease {
    fn new(connection: Arc<Connection>) -> Self {
        connection.leases.fetch_add(1, Ordering::Relaxed);
        Self { connection }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.connection.leases.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Called with a host's address when a connection to it succeeds.
pub type OnConnect = Arc<dyn Fn(&str) + Send + Sync>;

/// Creates leases for one host, opening connections as needed.
pub struct LeaseManager {
    target: Target,
    channels: usize,
    helper: String,
    require_cgroups: bool,
    connections: Mutex<Vec<Arc<Connection>>>,
    next_id: AtomicU64,
    on_connect: OnConnect,
    /// The OpenShell pool's metrics.
    metrics: BackendMetrics,
    /// Connections held, as of the last lease created (readable without the lock, which is
    /// held while a connection opens).
    held: AtomicUsize,
    /// A connection was lost and none has been opened since: the next open is a reconnect.
    lost: AtomicBool,
}

impl LeaseManager {
    /// A manager for `target` in the OpenShell pool of `metrics`, `channels` leases per connection;
    /// `sandbox` is the host's helper and whether hosts without every cgroup are refused.
    pub fn new(
        target: Target,
        metrics: &BackendMetrics,
        channels: usize,
        sandbox: (String, bool),
        on_connect: OnConnect,
    ) -> Self {
        Self {
            target,
            channels,
            helper: sandbox.0,
            require_cgroups: sandbox.1,
            connections: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            on_connect,
            metrics: metrics.clone(),
            held: AtomicUsize::new(0),
            lost: AtomicBool::new(false),
        }
    }

    /// Connections held as of the last lease created, without waiting for a connection to open.
    pub fn connections_held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Live connections now.
    pub async fn connections(&self) -> usize {
        let connections = self.connections.lock().await;
        connections.iter().filter(|c| c.alive()).count()
    }

    /// The most recent probe of this host, if any connection is live.
    pub async fn probe(&self) -> Option<HostProbe> {
        let connections = self.connections.lock().await;
        connections
            .iter()
            .find(|c| c.alive())
            .map(|c| c.probe.clone())
    }

    async fn open(&self) -> Result<Arc<Connection>, SshError> {
        let routes = Routes::default();
        let handle = connect::connect(&self.target, routes.clone()).await?;
        let addr = self.target.addr();
        let probe = probe::probe(&handle, &addr, &self.helper, self.require_cgroups).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(host = %addr, connection = id, ?probe, "ssh connection opened");
        (self.on_connect)(&addr);
        Ok(Arc::new(Connection {
            id,
            handle,
            addr,
            probe,
            spare: Semaphore::new(SSHD_MAX_SESSIONS - self.channels),
            routes,
            runners: Runners::default(),
            channels: self.channels,
            leases: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
        }))
    }
}

impl managed::Manager for LeaseManager {
    type Type = Lease;
    type Error = SshError;

    async fn create(&self) -> Result<Lease, SshError> {
        let mut connections = self.connections.lock().await;
        let before = connections.len();
        connections.retain(|connection| connection.alive());
        if connections.len() < before {
            self.lost.store(true, Ordering::Relaxed);
        }
        self.held.store(connections.len(), Ordering::Relaxed);
        let roomy = connections
            .iter()
            .filter(|c| c.leases.load(Ordering::Relaxed) < self.channels)
            .max_by_key(|c| c.leases.load(Ordering::Relaxed));
        if let Some(connection) = roomy {
            return Ok(Lease::new(connection.clone()));
        }
        let connection = self.open().await?;
        connections.push(connection.clone());
        self.held.store(connections.len(), Ordering::Relaxed);
        if self.lost.swap(false, Ordering::Relaxed) {
            self.metrics.record(BackendEvent::SshReconnected);
        }
        Ok(Lease::new(connection))
    }

    async fn recycle(&self, lease: &mut Lease, _: &Metrics) -> RecycleResult<SshError> {
        if lease.connection.alive() {
            Ok(())
        } else {
            Err(RecycleError::message("the connection closed"))
        }
    }
}

/// A pool of up to `max_connections` connections' worth of leases.
pub fn build(manager: LeaseManager, max_connections: usize) -> LeasePool {
    let size = manager.channels * max_connections;
    managed::Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .expect("a pool with a runtime and no hooks always builds")
}
