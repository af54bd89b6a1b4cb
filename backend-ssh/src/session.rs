//! Sessions on the SSH backend: one bubblewrap sandbox on a host held for the whole session,
//! each job entered into it.
//!
//! Opening a session leases a channel on a host and runs `sandbox hold ID` on it
//! (`deploy/ssh-host/sandbox-session`): the helper takes a uid of the host's pool and cgroups
//! with the session's limits (memory, processes, cpus, disk), starts the sandbox with a
//! keep-alive as pid 1, and prints `@openshell-session ID`. That channel stays open for the
//! session: closing its stdin releases the sandbox (killed, cgroups and record removed, uid
//! freed), and so does a dropped connection; the channel closing on its own means the sandbox
//! died. Each job is a `sandbox enter ID` on a channel of the same host, run exactly like a
//! job's (`exec`, same upload, same kill through the helper on timeout, cancel or output
//! limit), whose process is nsenter'd into the sandbox as the session's uid under the
//! sandbox's seccomp filter. A stopped job is followed by `sandbox reset ID`, which kills
//! every process of the sandbox but its pid 1; the files stay.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use openshell_protocol::{Enforcement, ErrorKind, LimitName};
use russh::ChannelMsg;
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;

use super::channel::{self, ExecChannel};
use super::exec::{self, Finish};
use super::pool::{Connection, LeasePool, PooledLease};
use super::verdict::Cgroups;
use super::{KIND, SshBackend, plan, request, setup_error};
use openshell_backend::session::RESET_WAIT;
use openshell_backend::{
    BackendError, Capabilities, Ending, Execution, Job, JobControl, SandboxSession, SessionBackend,
    SessionSpec,
};

/// How long the host may take to bring a session's sandbox up.
const HOLD_WAIT: Duration = Duration::from_secs(20);
/// What the helper prints once the sandbox is up.
const HELD: &str = "@openshell-session ";
/// What the helper says when the session's sandbox is not there any more.
const GONE: &str = "session sandbox gone";

/// What a session's jobs are held to: the sandbox's cgroups count every job's CPU time, so a
/// job's own `cpu_time` is RLIMIT_CPU per process only (reported as partly enforced).
fn per_process_cpu(cgroups: Cgroups) -> Cgroups {
    Cgroups {
        cpu_time: false,
        ..cgroups
    }
}

/// One session's sandbox on a host.
struct SshSession {
    id: String,
    addr: String,
    /// The host's connections, for the jobs' channels.
    pool: LeasePool,
    helper: String,
    settings: super::SshSettings,
    cgroups: Cgroups,
    /// Set once the hold channel closed: the sandbox is gone.
    ended: Arc<AtomicBool>,
    /// Releases the sandbox (closes the hold channel's stdin); `None` once closed.
    release: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

#[async_trait]
impl SessionBackend for SshBackend {
    async fn open(&self, spec: SessionSpec) -> Result<Box<dyn SandboxSession>, BackendError> {
        let (index, lease) = self.hosts.lease().await?;
        let connection = lease.connection.clone();
        let addr = connection.addr.clone();
        let keeper = spec.keeper(vec!["true".to_string()]);
        let (upload, cgroups) = plan::prepare(
            &keeper,
            &self.settings,
            &connection.probe,
            self.cgroups(),
            None,
        )?;
        let command = session_command(&self.settings.helper, "hold", &spec.id);
        connection
            .runners
            .make_room(connection.leases(), connection.channels);
        let mut channel = ExecChannel::start(&connection.handle, &command)
            .await
            .map_err(|error| {
                if channel::connection_lost(&error) {
                    connection.mark_broken();
                }
                error_at(
                    &addr,
                    ErrorKind::ConnectionFailed,
                    format!("opening the session's channel failed: {error}"),
                )
            })?;
        channel
            .writer()
            .data(upload.prefix.as_slice())
            .await
            .map_err(|error| {
                error_at(
                    &addr,
                    ErrorKind::ConnectionFailed,
                    format!("sending the session's request failed: {error}"),
                )
            })?;
        wait_until_held(&mut channel, &addr, &spec.id).await?;
        let ended = Arc::new(AtomicBool::new(false));
        let (release, released) = oneshot::channel();
        let holder = tokio::spawn(hold(channel, released, ended.clone(), lease));
        tracing::info!(session = %spec.id, tenant = %spec.tenant, host = %addr, "ssh session opened");
        Ok(Box::new(SshSession {
            id: spec.id,
            addr,
            pool: self.hosts.hosts[index].pool.clone(),
            helper: self.settings.helper.clone(),
            settings: self.settings.clone(),
            cgroups: per_process_cpu(cgroups),
            ended,
            release: Mutex::new(Some((release, holder))),
        }))
    }
}

/// `exec sudo -n HELPER COMMAND ID`.
fn session_command(helper: &str, command: &str, id: &str) -> String {
    format!(
        "exec sudo -n {} {command} {}",
        request::quote(helper),
        request::quote(id)
    )
}

/// Reads the hold channel until the helper says the sandbox is up, or fails with its message.
async fn wait_until_held(
    channel: &mut ExecChannel,
    addr: &str,
    id: &str,
) -> Result<(), BackendError> {
    let (mut stdout, mut stderr, mut status) = (Vec::new(), Vec::new(), None);
    let expected = format!("{HELD}{id}\n");
    let held = tokio::time::timeout(HOLD_WAIT, async {
        loop {
            match channel.read.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    stdout.extend_from_slice(&data);
                    if stdout.ends_with(expected.as_bytes()) {
                        return true;
                    }
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => stderr.extend_from_slice(&data),
                Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                Some(ChannelMsg::Close) | None => return false,
                Some(_) => {}
            }
        }
    })
    .await;
    match held {
        Ok(true) => Ok(()),
        Ok(false) => {
            let error: BackendError =
                setup_error(addr.to_string(), &String::from_utf8_lossy(&stderr), status).into();
            Err(error)
        }
        Err(_) => Err(error_at(
            addr,
            ErrorKind::SandboxStartFailed,
            format!("the session's sandbox did not come up within {HOLD_WAIT:?}"),
        )),
    }
}

/// Keeps the hold channel (and its lease) until the channel closes (the sandbox died, or the
/// connection dropped) or the session is released, which closes its stdin and waits.
async fn hold(
    mut channel: ExecChannel,
    mut release: oneshot::Receiver<()>,
    ended: Arc<AtomicBool>,
    lease: PooledLease,
) {
    let mut released = false;
    loop {
        tokio::select! {
            message = channel.read.wait() => match message {
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            _ = &mut release, if !released => {
                released = true;
                if channel.writer().eof().await.is_err() {
                    break;
                }
            }
        }
    }
    ended.store(true, Ordering::SeqCst);
    drop(lease);
}

fn error_at(addr: &str, kind: ErrorKind, message: String) -> BackendError {
    BackendError::new(kind, KIND, addr.to_string(), message)
}

#[async_trait]
impl SandboxSession for SshSession {
    fn describe(&self) -> String {
        format!("ssh sandbox of session {} on {}", self.id, self.addr)
    }

    fn capabilities(&self, mut capabilities: Capabilities) -> Capabilities {
        // The host's helper refuses them too (`sandbox enter`); admission says so first.
        capabilities.insert(
            LimitName::Files,
            Enforcement::not_enforced("a job in a session on an SSH host cannot return files yet"),
        );
        capabilities
    }

    async fn execute(&self, job: Job, control: JobControl) -> Result<Execution, BackendError> {
        if self.release.lock().await.is_none() {
            return Err(self.error(ErrorKind::NotFound, "the session is closed".to_string()));
        }
        if self.ended.load(Ordering::SeqCst) {
            return Err(self.lost());
        }
        if control.cancel.is_cancelled() {
            return Ok(Execution {
                ending: Ending::Cancelled,
                exit_code: None,
                enforcement: super::verdict::report(&job.limits, self.cgroups),
                ..Execution::exited(0)
            });
        }
        let lease = self.pool.get().await.map_err(|error| {
            self.error(
                ErrorKind::ConnectionFailed,
                format!("no connection to the session's host: {error}"),
            )
        })?;
        let connection: Arc<Connection> = lease.connection.clone();
        let (mut upload, cgroups) =
            plan::prepare(&job, &self.settings, &connection.probe, self.cgroups, None)?;
        upload.command = session_command(&self.helper, "enter", &self.id);
        let timeout = job.limits.timeout.map(|timeout| timeout.as_duration());
        let work = exec::Work {
            upload,
            stdin: job.stdin.as_bytes().to_vec(),
            timeout,
            control: &control,
            helper: &self.helper,
            files_max_bytes: 0,
        };
        let finish = exec::run(&connection, work).await;
        drop(lease);
        match finish {
            Finish::Ran(ran) => {
                let execution =
                    SshBackend::execution(&job, &control, ran, per_process_cpu(cgroups));
                if execution.signal == Some(9) {
                    // The sandbox may have died under the job: its hold channel says so.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if self.ended.load(Ordering::SeqCst) {
                    return Err(self.lost());
                }
                Ok(execution)
            }
            Finish::SetupFailed { stderr, .. } if stderr.contains(GONE) => Err(self.lost()),
            Finish::SetupFailed { stderr, status } => {
                // nsenter fails on a sandbox dying under it: its hold channel then says so.
                tokio::time::sleep(Duration::from_millis(200)).await;
                if self.ended.load(Ordering::SeqCst) {
                    return Err(self.lost());
                }
                Err(setup_error(self.addr.clone(), &stderr, status).into())
            }
            Finish::NotStarted(cause) => Err(self.error(
                ErrorKind::ConnectionFailed,
                format!("the job's channel closed before it started: {cause}"),
            )),
            Finish::Lost { cause, .. } => Err(self.error(
                ErrorKind::SandboxLost,
                format!("{cause}: the session's sandbox is gone with it"),
            )),
        }
    }

    async fn reset(&self) -> Result<(), BackendError> {
        let lease = self.pool.get().await.map_err(|error| {
            self.error(
                ErrorKind::SandboxLost,
                format!("no connection to the session's host to reset it: {error}"),
            )
        })?;
        let command = session_command(&self.helper, "reset", &self.id);
        let output = channel::run(
            &lease.connection.handle,
            &command,
            RESET_WAIT + Duration::from_secs(5),
        )
        .await
        .map_err(|cause| self.error(ErrorKind::SandboxLost, cause))?;
        if output.status == Some(0) {
            return Ok(());
        }
        Err(self.error(
            ErrorKind::SandboxLost,
            format!(
                "resetting the session's sandbox failed: {}: the session is over",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ))
    }

    async fn close(&self) -> Result<(), BackendError> {
        let Some((release, holder)) = self.release.lock().await.take() else {
            return Ok(());
        };
        let _ = release.send(());
        if tokio::time::timeout(RESET_WAIT, holder).await.is_err() {
            return Err(self.error(
                ErrorKind::SandboxLost,
                format!("the host did not release the session's sandbox within {RESET_WAIT:?}"),
            ));
        }
        tracing::info!(session = %self.id, host = %self.addr, "ssh session closed; sandbox released");
        Ok(())
    }
}

impl SshSession {
    fn lost(&self) -> BackendError {
        self.error(
            ErrorKind::SandboxLost,
            "the session's sandbox is gone: the session is over; open a new one".to_string(),
        )
    }

    fn error(&self, kind: ErrorKind, message: String) -> BackendError {
        BackendError::new(kind, KIND, self.describe(), message)
    }
}
