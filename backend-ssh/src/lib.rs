//! The SSH backend (`SANDBOX_BACKEND=ssh`): jobs run on dedicated remote hosts over pooled connections.
//!
//! Per job: `hosts` picks a host and leases a channel on one of its pooled connections
//! (`pool`, opened by `connect` with the host key checked by `known_hosts` and the client key
//! from `key`, probed once by `probe`); `plan` turns the job into a request for the host's
//! sandbox helper (`request`) and the channel's stdin (`upload`); `exec` runs it, on one of the
//! connection's resident runners (`runner`: `sandbox serve`, which has the job's sandbox made
//! before the job arrives) or, for jobs with network or egress, on a channel of its own
//! (`sandbox run`), moving output into the sink and killing the job through the helper from a
//! second channel on timeout, cancel or output limit; `verdict` says how it ended and how each
//! limit was enforced.
//!
//! The worker logs in as a transport user that never runs jobs itself: each job goes through
//! `sudo` to the host's sandbox helper (`deploy/ssh-host/sandbox`), which runs it under a uid
//! of its own from a pool, in bubblewrap's pid, mount, ipc, uts and network namespaces, with
//! a cgroup per job where the host has the controllers, private tmpfs for its working
//! directory, /tmp, /var/tmp and /dev/shm, and no user namespaces. When the job's own process
//! ends, the namespace dies with everything in it; the helper reports that process's exit
//! status or signal. A job held to egress rules gets no network there but its egress socket,
//! which `egress` has sshd forward back over the job's connection to the worker's proxy.

pub mod channel;
pub mod connect;
pub mod egress;
pub mod error;
pub mod exec;
pub mod files;
pub mod hosts;
pub mod key;
pub mod known_hosts;
pub mod plan;
pub mod pool;
pub mod probe;
pub mod request;
pub mod runner;
mod session;
pub mod settings;
pub mod upload;
pub mod verdict;

use std::sync::{PoisonError, RwLock};

use async_trait::async_trait;
use openshell_protocol::ErrorKind;

pub use settings::SshSettings;

use self::connect::Target;
use self::error::SshError;
use self::exec::{Finish, Ran};
use self::hosts::{Host, Hosts};
use self::pool::LeaseManager;
use self::verdict::Cgroups;
use openshell_backend::{
    Backend, BackendError, BackendEvent, BackendMetrics, Capabilities, Ending, Execution, Job,
    JobControl, PoolContext, SessionBackend, Stream,
};

/// The backend's kind, as in `SANDBOX_BACKEND`.
pub const KIND: &str = "ssh";

/// Attempts for a job whose channel died before its wrapper started.
const ATTEMPTS: usize = 2;
/// How long to keep trying to kill a job whose connection dropped.
const KILL_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(30);
/// Time for one try: a connection to a half-restarted sshd can hang.
const KILL_ATTEMPT: std::time::Duration = std::time::Duration::from_secs(5);
/// First pause between those tries; it doubles up to 5 s.
const KILL_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(200);

/// Runs jobs on remote hosts over SSH.
pub struct SshBackend {
    /// The OpenShell pool's metrics.
    metrics: BackendMetrics,
    settings: SshSettings,
    hosts: Hosts,
    /// The cgroup controllers every probed host has: what the pool promises admission.
    common: RwLock<Cgroups>,
}

/// One host's connections and leases, for monitoring and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    /// host:port.
    pub addr: String,
    /// Live connections.
    pub connections: usize,
    /// Leases in the pool (busy and idle).
    pub leases: usize,
    /// Idle leases.
    pub idle: usize,
}

impl SshBackend {
    /// A backend of `pool` with `settings`; connects lazily. Fails on configuration errors
    /// only.
    pub fn new(settings: SshSettings, pool: &PoolContext) -> Result<Self, BackendError> {
        if let Some((key, reason)) = settings.problem() {
            return Err(BackendError::new(
                ErrorKind::SandboxStartFailed,
                KIND,
                format!("[pools.NAME.ssh] {key}"),
                reason,
            ));
        }
        let key_path = settings.key_path.clone().unwrap_or_default();
        let key = key::load(&key_path)?;
        let hosts = settings
            .host_addrs()
            .into_iter()
            .map(|addr| {
                let target = Target::new(&settings, addr, key.clone());
                let sandbox = (settings.helper.clone(), settings.require_cgroups);
                let channels = settings.channels_per_connection;
                Host::new(
                    target.addr(),
                    |on_connect| {
                        LeaseManager::new(target, &pool.metrics, channels, sandbox, on_connect)
                    },
                    settings.max_connections,
                )
            })
            .collect();
        let max_backoff = settings.retry_down_host_after.as_duration();
        Ok(Self {
            metrics: pool.metrics.clone(),
            settings,
            hosts: Hosts::new(hosts, max_backoff),
            common: RwLock::new(Cgroups::default()),
        })
    }

    /// [`SshBackend::new`], then one connection to every host; fails when no host accepts
    /// one for a reason retrying will not fix (host key, authentication, unfit host).
    pub async fn start(settings: SshSettings, pool: &PoolContext) -> Result<Self, BackendError> {
        let backend = Self::new(settings, pool)?;
        let attempts = backend.hosts.hosts.iter().map(|host| async move {
            host.lease(backend.settings.retry_down_host_after.as_duration())
                .await
                .map(drop)
        });
        let outcomes = futures::future::join_all(attempts).await;
        let errors: Vec<SshError> = outcomes.into_iter().filter_map(Result::err).collect();
        if errors.len() == backend.hosts.hosts.len()
            && let Some(error) = errors.into_iter().find(|error| !error.is_transient())
        {
            return Err(error.into());
        }
        backend.learn_cgroups().await;
        backend.report();
        Ok(backend)
    }

    /// Sets the pool's SSH gauges: connections held and channels leased to jobs, over every
    /// host. Called as leases come and go, and by the periodic health check.
    fn report(&self) {
        let (mut connections, mut channels) = (0, 0);
        for host in &self.hosts.hosts {
            let status = host.pool.status();
            connections += host.pool.manager().connections_held();
            channels += status.size.saturating_sub(status.available);
        }
        self.metrics.record(BackendEvent::SshConnections {
            connections,
            channels,
        });
    }

    /// Connections and leases per host.
    pub async fn status(&self) -> Vec<HostStatus> {
        let mut statuses = Vec::new();
        for host in &self.hosts.hosts {
            let pool = host.pool.status();
            statuses.push(HostStatus {
                addr: host.addr.clone(),
                connections: host.pool.manager().connections().await,
                leases: pool.size,
                idle: pool.available,
            });
        }
        statuses
    }

    /// Learns what every host's sandbox has, from the probes of live connections. A host not
    /// probed yet counts as having nothing, unless `require_cgroups` keeps such hosts out.
    async fn learn_cgroups(&self) {
        let mut common = Cgroups::ALL;
        for host in &self.hosts.hosts {
            let found = match host.pool.manager().probe().await {
                Some(probe) => probe.cgroups,
                None if self.settings.require_cgroups => Cgroups::ALL,
                None => Cgroups::default(),
            };
            common = common.common(found);
        }
        *self.common.write().unwrap_or_else(PoisonError::into_inner) = common;
    }

    fn cgroups(&self) -> Cgroups {
        *self.common.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `job` once on a leased channel; `Ok(None)` asks for another attempt.
    async fn attempt(
        &self,
        job: &Job,
        control: &JobControl,
    ) -> Result<Option<Execution>, BackendError> {
        let (index, lease) = self.hosts.lease().await?;
        self.report();
        let connection = lease.connection.clone();
        let egress = match &job.egress {
            Some(endpoint) => Some(egress::Remote::open(&connection, endpoint).await?),
            None => None,
        };
        let number = egress.as_ref().map(|remote| remote.number);
        let (upload, cgroups) = match plan::prepare(
            job,
            &self.settings,
            &connection.probe,
            self.cgroups(),
            number,
        ) {
            Ok(prepared) => prepared,
            Err(error) => {
                if let Some(remote) = egress {
                    remote.close().await;
                }
                return Err(error.into());
            }
        };
        let timeout = job.limits.timeout.map(|timeout| timeout.as_duration());
        let files_max_bytes = job.outputs.as_ref().map_or(0, |outputs| outputs.max_bytes);
        let stdin = job.stdin.as_bytes().to_vec();
        let helper = &self.settings.helper;
        let work = exec::Work {
            upload,
            stdin,
            timeout,
            control,
            helper,
            files_max_bytes,
        };
        let finish = exec::run_job(&connection, work).await;
        if let Some(remote) = egress {
            remote.close().await;
        }
        drop(lease);
        self.report();
        let addr = connection.addr.clone();
        match finish {
            Finish::Ran(ran) => Ok(Some(Self::execution(job, control, ran, cgroups))),
            Finish::NotStarted(cause) => {
                tracing::warn!(job = %job.id, host = %addr, "job not started, retrying elsewhere: {cause}");
                Ok(None)
            }
            Finish::SetupFailed { stderr, status } => {
                Err(setup_error(addr, &stderr, status).into())
            }
            Finish::Lost { token, cause } => {
                if let Some(token) = token {
                    self.kill_later(index, token);
                }
                let mut error: BackendError = SshError::Lost {
                    addr,
                    cause: format!(
                        "{cause} (job {}); its processes on the host are being killed; resubmit the job",
                        job.id
                    ),
                }
                .into();
                // The job was handed to the host: it may have run in part, so it is not a
                // failure to start (which durable mode would put back and run again).
                error.kind = ErrorKind::SandboxLost;
                Err(error)
            }
        }
    }

    /// Kills a job whose connection died, from a fresh connection to the same host, retrying
    /// while the host comes back (a restarted sshd takes a moment to listen again).
    fn kill_later(&self, index: usize, token: String) {
        let Some(host) = self.hosts.hosts.get(index) else {
            return;
        };
        let (pool, addr) = (host.pool.clone(), host.addr.clone());
        let command = request::kill_command(&self.settings.helper, &token);
        tokio::spawn(async move {
            let mut pause = KILL_RETRY_FIRST;
            let deadline = tokio::time::Instant::now() + KILL_RETRY_FOR;
            while tokio::time::Instant::now() < deadline {
                if let Ok(lease) = pool.get().await {
                    let killed =
                        channel::run(&lease.connection.handle, &command, KILL_ATTEMPT).await;
                    match killed {
                        Ok(_) => return,
                        Err(_) => lease.connection.mark_broken(),
                    }
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
            tracing::warn!(
                host = %addr,
                %token,
                "could not reach the host to kill a job whose connection dropped; its sandbox helper kills it at the backstop"
            );
        });
    }

    fn execution(job: &Job, control: &JobControl, ran: Ran, cgroups: Cgroups) -> Execution {
        let Ran {
            ending,
            exit_code,
            signal,
            wall_time,
            killed,
            files_part,
        } = ran;
        let stderr = control.output.snapshot().stderr;
        let ending = match ending {
            Ending::Exited if control.output.is_limit_reached() => Ending::OutputLimit,
            // The helper's backstop killed it: the worker's own timer missed the deadline.
            Ending::Exited if !killed && signal == Some(9) && past_timeout(job, wall_time) => {
                Ending::Timeout
            }
            Ending::Exited
                if verdict::looks_out_of_memory(
                    job.limits.memory.is_some(),
                    cgroups.memory,
                    (exit_code, signal),
                    &stderr,
                ) =>
            {
                Ending::OutOfMemory
            }
            other => other,
        };
        if ending == Ending::Exited && exit_code == Some(126) {
            control.output.write(
                Stream::Stderr,
                b"openshell: Permission denied in sandbox: the program could not be executed (exit 126)\n",
            );
        }
        Execution {
            ending,
            exit_code,
            signal,
            wall_time,
            cpu_time: None,
            peak_memory_bytes: None,
            enforcement: verdict::report(&job.limits, cgroups),
            files: job
                .outputs
                .as_ref()
                .filter(|_| matches!(ending, Ending::Exited | Ending::OutOfMemory))
                .zip(files_part)
                .and_then(|(request, part)| files::parse(&part, request)),
        }
    }
}

fn past_timeout(job: &Job, wall_time: std::time::Duration) -> bool {
    job.limits
        .timeout
        .is_some_and(|timeout| wall_time >= timeout.as_duration())
}

/// The error for a wrapper that failed before the program started.
fn setup_error(addr: String, stderr: &str, status: Option<u32>) -> SshError {
    let message = stderr
        .lines()
        .filter_map(|line| line.strip_prefix(request::SETUP_ERROR))
        .collect::<Vec<_>>()
        .join("; ");
    let cause = match (message.is_empty(), status) {
        (false, _) => message,
        (true, Some(status)) => format!(
            "the sandbox helper exited with status {status} before starting the program: {}",
            stderr.trim()
        ),
        (true, None) => format!(
            "sshd closed the channel before the sandbox helper started: {}",
            stderr.trim()
        ),
    };
    if cause.contains("Permission denied") {
        SshError::Denied { addr, cause }
    } else {
        SshError::Setup { addr, cause }
    }
}

#[async_trait]
impl Backend for SshBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        verdict::capabilities(self.cgroups())
    }

    async fn health(&self) -> Result<(), BackendError> {
        let leased = self.hosts.lease().await.map(drop);
        self.learn_cgroups().await;
        self.report();
        leased.map_err(BackendError::from)
    }

    fn sessions(&self) -> Option<&dyn SessionBackend> {
        Some(self)
    }

    async fn execute(&self, job: Job, control: JobControl) -> Result<Execution, BackendError> {
        tracing::debug!(job = %job.id, tenant = %job.tenant, argv = ?job.argv, limits = ?job.limits, "ssh backend: running job");
        for _ in 0..ATTEMPTS {
            if control.cancel.is_cancelled() {
                break;
            }
            if let Some(execution) = self.attempt(&job, &control).await? {
                return Ok(execution);
            }
        }
        if control.cancel.is_cancelled() {
            return Ok(Execution {
                ending: Ending::Cancelled,
                exit_code: None,
                enforcement: verdict::report(&job.limits, self.cgroups()),
                ..Execution::exited(0)
            });
        }
        Err(SshError::Lost {
            addr: "every host tried".into(),
            cause: format!("job {} could not be started: its channel closed before the wrapper ran, {ATTEMPTS} times", job.id),
        }
        .into())
    }
}
