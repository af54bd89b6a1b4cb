//! Running one job on a channel: upload, header, output into the sink, and a kill through the
//! host's sandbox helper from a second channel on timeout, cancellation or output limit. A job
//! goes either to a resident runner on a serve channel ([`run_served`], see `runner.rs`) or to
//! `sandbox run` on a channel of its own ([`run`]); both end up as the same [`Event`]s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::{ChannelMsg, Sig};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use super::channel::{self, ExecChannel};
use super::files::Trailer;
use super::pool::Connection;
use super::request;
use super::runner::{self, Runners, ServeChannel};
use super::upload::Upload;
use openshell_backend::output::Flow;
use openshell_backend::{Ending, JobControl, Stream};

/// How long the channel may stay open after the kill before it is closed from this side
/// (only a process that escaped the group can hold the output open that long).
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Time allowed for the kill command itself.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// What sshd sends in place of a signal name it does not know (SIGXCPU, SIGSYS, ...): the
/// number is then asked of the host's sandbox helper.
const UNNAMED_SIGNAL: &str = "SIG@openssh.com";

/// How a job's channel ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// The program ran; `ending` says why it stopped.
    Ran(Ran),
    /// The wrapper failed before starting the program; `stderr` has its message.
    SetupFailed {
        /// The wrapper's stderr.
        stderr: String,
        /// Its exit status.
        status: Option<u32>,
    },
    /// The channel could not be opened or died before the wrapper started: safe to retry.
    NotStarted(String),
    /// The connection dropped while the program ran.
    Lost {
        /// The job's token on the host, to kill it from another connection.
        token: Option<String>,
        /// What happened.
        cause: String,
    },
}

/// A program that ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// Why it stopped (before the out-of-memory verdict).
    pub ending: Ending,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Killing signal.
    pub signal: Option<i32>,
    /// From `@run` to the exit status.
    pub wall_time: Duration,
    /// This side killed it.
    pub killed: bool,
    /// What the sandbox sent after the files marker, when it was asked for files and sent
    /// them whole.
    pub files_part: Option<Vec<u8>>,
}

/// What a job's channel or runner reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Bytes of the helper's stdout (its header lines, then the program's).
    Stdout(Vec<u8>),
    /// Bytes of stderr.
    Stderr(Vec<u8>),
    /// The exit code.
    Exit(i32),
    /// The killing signal; `unnamed` when sshd could not name it (ask the helper).
    Signal {
        /// Its number (0 when unknown).
        number: i32,
        /// sshd sent `SIG@openssh.com`.
        unnamed: bool,
    },
    /// The job's channel closed, or its runner ended it: nothing more comes.
    Closed,
}

/// Where a job's events come from.
trait Events {
    /// The next event; `None` when the stream broke off.
    async fn next(&mut self) -> Option<Event>;
}

impl Events for ExecChannel {
    async fn next(&mut self) -> Option<Event> {
        loop {
            let event = match self.read.wait().await? {
                ChannelMsg::Data { data } => Event::Stdout(data.to_vec()),
                ChannelMsg::ExtendedData { data, .. } => Event::Stderr(data.to_vec()),
                ChannelMsg::ExitStatus { exit_status } => {
                    Event::Exit(i32::try_from(exit_status).unwrap_or(i32::MAX))
                }
                ChannelMsg::ExitSignal { signal_name, .. } => Event::Signal {
                    unnamed: matches!(&signal_name, Sig::Custom(name) if name == UNNAMED_SIGNAL),
                    number: channel::signal_number(&signal_name),
                },
                ChannelMsg::Close => Event::Closed,
                _ => continue,
            };
            return Some(event);
        }
    }
}

impl Events for runner::JobEvents<'_> {
    async fn next(&mut self) -> Option<Event> {
        runner::JobEvents::next(self).await
    }
}

/// How long a runner may take to read the rest of a job's stdin after its end line before
/// its channel is given up.
const FEED_GRACE: Duration = Duration::from_secs(1);

/// What one job sends to a host and how it is watched there.
pub struct Work<'a> {
    /// The helper's request and the sandbox's stdin before the job's own.
    pub upload: Upload,
    /// The job's stdin.
    pub stdin: Vec<u8>,
    /// Its wall timeout.
    pub timeout: Option<Duration>,
    /// Its cancellation and output sink.
    pub control: &'a JobControl,
    /// The host's sandbox helper, which kills it.
    pub helper: &'a str,
    /// Bytes of returned files kept (plus their entry lines).
    pub files_max_bytes: u64,
}

impl<'a> Work<'a> {
    /// The watcher of this job's output on `connection`.
    fn job(&self, connection: &Arc<Connection>) -> Job<'a> {
        let mut job = Job::new(connection.clone(), self.timeout, self.control, self.helper);
        job.trailer = Trailer::new(self.upload.files_marker.clone(), self.files_max_bytes);
        job
    }
}

/// Runs `work` on one of `connection`'s resident runners when it can go there, else through
/// `sandbox run` ([`run`]): network and egress are decided when bubblewrap starts, so such
/// jobs, and hosts without `sandbox serve`, always take `run`.
pub async fn run_job(connection: &Arc<Connection>, work: Work<'_>) -> Finish {
    let servable = !work.upload.needs_run && connection.probe.serve && connection.runners.usable();
    let work = if servable {
        match run_served(connection, work).await {
            Ok(finish) => return finish,
            Err(work) => work,
        }
    } else {
        work
    };
    run(connection, work).await
}

/// Runs `work` on one of `connection`'s resident runners, which keep the job's sandbox made
/// ahead of it. `Err` gives `work` back when this connection has no runner to give (the host
/// refused one): run it with [`run`] instead.
async fn run_served<'a>(connection: &Arc<Connection>, work: Work<'a>) -> Result<Finish, Work<'a>> {
    let mut serve = match Runners::take(connection, work.helper, work.upload.shape).await {
        Ok(serve) => serve,
        Err(_) if !connection.runners.usable() => return Err(work),
        Err(cause) => return Ok(Finish::NotStarted(cause)),
    };
    let nonce = runner::nonce();
    let mut feed = serve.feed(ServeChannel::job_frame(&nonce, &work.upload, &work.stdin));
    let mut job = work.job(connection);
    job.served = true;
    let mut events = serve.events(&nonce);
    let finish = job.follow(&mut events).await;
    let in_step = events.ended;
    // The runner reads the whole frame, whatever the job read of it: once it has, the
    // channel is in step for the next job.
    let fed = matches!(
        tokio::time::timeout(FEED_GRACE, &mut feed).await,
        Ok(Ok(true))
    );
    feed.abort();
    if in_step && fed && connection.alive() {
        connection.runners.give_back(serve);
    }
    Ok(finish)
}

/// Runs `work` on a channel of its own on `connection` (`sandbox run`, or a session's
/// `sandbox enter`), feeding the job's stdin after the upload.
pub async fn run(connection: &Arc<Connection>, work: Work<'_>) -> Finish {
    connection
        .runners
        .make_room(connection.leases(), connection.channels);
    let mut channel = match ExecChannel::start(&connection.handle, &work.upload.command).await {
        Ok(channel) => channel,
        Err(error) => {
            if channel::connection_lost(&error) {
                connection.mark_broken();
            }
            return Finish::NotStarted(format!("opening a channel failed: {error}"));
        }
    };
    let mut job = work.job(connection);
    let writer = feed(&channel, work.upload.prefix, work.stdin);
    let finish = job.follow(&mut channel).await;
    writer.abort();
    finish
}

/// Writes the upload, then the job's stdin, then EOF; a closed channel just ends it.
fn feed(channel: &ExecChannel, prefix: Vec<u8>, stdin: Vec<u8>) -> AbortOnDrop {
    let mut writer = channel.writer().make_writer();
    AbortOnDrop(tokio::spawn(async move {
        if writer.write_all(&prefix).await.is_ok() && writer.write_all(&stdin).await.is_ok() {
            let _ = writer.shutdown().await;
        }
    }))
}

struct AbortOnDrop(JoinHandle<()>);

impl AbortOnDrop {
    fn abort(&self) {
        self.0.abort();
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The state of one job's channel as messages arrive.
struct Job<'a> {
    connection: Arc<Connection>,
    timeout: Option<Duration>,
    control: &'a JobControl,
    helper: &'a str,
    header: Header,
    trailer: Trailer,
    /// When the files marker arrived: the job's own process had ended.
    program_ended: Option<Instant>,
    early_stderr: Vec<u8>,
    started: Option<Instant>,
    exited: Option<Instant>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    stop: Option<Ending>,
    killed: bool,
    closed: bool,
    /// sshd reported a signal it could not name.
    unnamed_signal: bool,
    /// On a resident runner: only its end line counts as the end (`closed`).
    served: bool,
}

impl<'a> Job<'a> {
    fn new(
        connection: Arc<Connection>,
        timeout: Option<Duration>,
        control: &'a JobControl,
        helper: &'a str,
    ) -> Self {
        Self {
            connection,
            timeout,
            control,
            helper,
            header: Header::default(),
            trailer: Trailer::default(),
            program_ended: None,
            early_stderr: Vec::new(),
            started: None,
            exited: None,
            exit_code: None,
            signal: None,
            stop: None,
            killed: false,
            closed: false,
            unnamed_signal: false,
            served: false,
        }
    }

    /// Reads the channel to its close, stopping the job when a limit or cancel says so.
    async fn follow(&mut self, channel: &mut impl Events) -> Finish {
        let begun = Instant::now();
        let mut drain_until: Option<Instant> = None;
        let (cancel, output) = (&self.control.cancel, &self.control.output);
        loop {
            let deadline = self.deadline(begun, drain_until);
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let wants_stop = self.stop.is_none();
            tokio::select! {
                event = channel.next() => match event {
                    Some(Event::Closed) => {
                        self.closed = true;
                        break;
                    }
                    None => break,
                    Some(event) => self.handle(event),
                },
                () = sleep => {
                    if drain_until.is_some() {
                        break;
                    }
                    self.stop = Some(Ending::Timeout);
                }
                () = cancel.cancelled(), if wants_stop => self.stop = Some(Ending::Cancelled),
                () = output.limit_reached(), if wants_stop => self.stop = Some(Ending::OutputLimit),
            }
            if self.stop.is_some() && !self.killed && self.header.token.is_some() {
                self.kill();
                drain_until = Some(Instant::now() + DRAIN_GRACE);
            }
            if self.stop.is_some() && self.header.token.is_none() && drain_until.is_none() {
                // Nothing has started yet: closing the channel cuts the upload, and the
                // wrapper gives up at the sentinel.
                drain_until = Some(Instant::now() + DRAIN_GRACE);
            }
        }
        if self.unnamed_signal {
            self.ask_signal().await;
        }
        self.finish()
    }

    /// Asks the helper which signal ended the job, when sshd could not name it.
    async fn ask_signal(&mut self) {
        let Some(token) = self.header.token.clone() else {
            return;
        };
        let command = request::status_command(self.helper, &token);
        match channel::run(&self.connection.handle, &command, KILL_TIMEOUT).await {
            Ok(output) => {
                let text = String::from_utf8_lossy(&output.stdout);
                if let Some(number) = text
                    .lines()
                    .find_map(|line| line.strip_prefix("signal="))
                    .and_then(|number| number.trim().parse().ok())
                {
                    self.signal = Some(number);
                }
            }
            Err(error) => {
                tracing::warn!(host = %self.connection.addr, %token, "asking which signal ended a job failed: {error}");
            }
        }
    }

    fn deadline(&self, begun: Instant, drain_until: Option<Instant>) -> Option<Instant> {
        if drain_until.is_some() {
            return drain_until;
        }
        if self.stop.is_some() || self.program_ended.is_some() {
            // Reading the files after the program ended is not the program's time.
            return None;
        }
        let since = self.started.unwrap_or(begun);
        self.timeout.map(|timeout| since + timeout)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Stdout(data) => {
                let body = self.header.feed(&data);
                if self.started.is_none() && self.header.running {
                    self.started = Some(Instant::now());
                    let early = std::mem::take(&mut self.early_stderr);
                    self.write(Stream::Stderr, &early);
                }
                let output = self.trailer.feed(&body);
                if self.trailer.found() && self.program_ended.is_none() {
                    self.program_ended = Some(Instant::now());
                }
                self.write(Stream::Stdout, &output);
            }
            Event::Stderr(data) => {
                if self.started.is_some() {
                    self.write(Stream::Stderr, &data);
                } else {
                    self.early_stderr.extend_from_slice(&data);
                }
            }
            Event::Exit(code) => {
                self.exited = Some(Instant::now());
                self.exit_code = Some(code);
            }
            Event::Signal { number, unnamed } => {
                self.exited = Some(Instant::now());
                self.unnamed_signal = unnamed;
                self.signal = Some(number);
            }
            Event::Closed => {}
        }
    }

    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() || self.control.output.is_limit_reached() {
            return;
        }
        if self.control.output.write(stream, bytes) == Flow::LimitReached && self.stop.is_none() {
            self.stop = Some(Ending::OutputLimit);
        }
    }

    /// Kills the job through the helper from a short second channel, without blocking the
    /// reader.
    fn kill(&mut self) {
        let Some(token) = self.header.token.clone() else {
            return;
        };
        self.killed = true;
        let connection = self.connection.clone();
        let command = request::kill_command(self.helper, &token);
        tokio::spawn(async move {
            let _permit = connection.spare.acquire().await;
            if let Err(error) = channel::run(&connection.handle, &command, KILL_TIMEOUT).await {
                tracing::warn!(host = %connection.addr, %token, "killing a job failed: {error}");
            }
        });
    }

    fn finish(&mut self) -> Finish {
        let held = self.trailer.flush();
        self.write(Stream::Stdout, &held);
        let Some(started) = self.started else {
            if let Some(ending) = self.stop {
                return Finish::Ran(Ran {
                    ending,
                    exit_code: None,
                    signal: None,
                    wall_time: Duration::ZERO,
                    killed: self.killed,
                    files_part: None,
                });
            }
            if self.header.token.is_none() && !self.closed {
                return Finish::NotStarted(
                    "the channel closed before the job wrapper started".into(),
                );
            }
            return Finish::SetupFailed {
                stderr: String::from_utf8_lossy(&self.early_stderr).into_owned(),
                status: self.exit_code.and_then(|code| u32::try_from(code).ok()),
            };
        };
        let reported = self.exit_code.is_some() || self.signal.is_some();
        if !reported && self.stop.is_none() {
            // A runner that died is its channel's loss, not the connection's.
            if !self.served || !self.connection.alive() {
                self.connection.mark_broken();
            }
            return Finish::Lost {
                token: self.header.token.clone(),
                cause: "the connection dropped while the job ran".into(),
            };
        }
        let ended = self
            .program_ended
            .or(self.exited)
            .unwrap_or_else(Instant::now);
        Finish::Ran(Ran {
            ending: self.stop.unwrap_or(Ending::Exited),
            exit_code: self.exit_code,
            signal: self.signal,
            wall_time: ended.saturating_duration_since(started),
            killed: self.killed,
            files_part: self.trailer.files_part().map(<[u8]>::to_vec),
        })
    }
}

/// Strips the helper's two header lines off the start of stdout.
#[derive(Debug, Default)]
struct Header {
    buffer: Vec<u8>,
    token: Option<String>,
    running: bool,
}

impl Header {
    /// Consumes header bytes from `data` and returns the job's own output in it.
    fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        if self.running {
            return data.to_vec();
        }
        self.buffer.extend_from_slice(data);
        while !self.running {
            let Some(end) = self.buffer.iter().position(|&byte| byte == b'\n') else {
                return Vec::new();
            };
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            if let Some(token) = line.strip_prefix(request::HEADER) {
                self.token =
                    Some(token.trim().to_string()).filter(|token| request::is_token(token));
            } else if line == request::RUN {
                self.running = true;
            }
        }
        std::mem::take(&mut self.buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_stripped_however_the_bytes_arrive() {
        let stream = b"@openshell 12-0123456789abcdef\n@run\nhello\nworld";
        for split in 0..stream.len() {
            let mut header = Header::default();
            let mut body = header.feed(&stream[..split]);
            body.extend(header.feed(&stream[split..]));
            assert_eq!(body, b"hello\nworld", "split at {split}");
            assert_eq!(header.token.as_deref(), Some("12-0123456789abcdef"));
            assert!(header.running);
        }
        let mut failed = Header::default();
        assert!(failed.feed(b"@openshell 7-0123456789abcdef\n").is_empty());
        assert!(failed.token.is_some() && !failed.running);
        let mut forged = Header::default();
        assert!(forged.feed(b"@openshell 7; reboot\n").is_empty());
        assert_eq!(forged.token, None);
    }
}
