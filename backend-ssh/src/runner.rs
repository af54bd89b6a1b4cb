//! The worker's side of a host's resident runner (`sandbox serve`, see
//! `deploy/ssh-host/sandbox-serve`): serve channels, each running one runner that takes jobs
//! one at a time as frames, and a small pool of them per connection.
//!
//! A job goes down as `openshell-job NONCE LENGTH`, the helper's request, and `LENGTH` bytes
//! for the sandbox's stdin; it comes back as `o N` / `e N` frames of its stdout and stderr and
//! one `end NONCE ...` line. The NONCE is 128 random bits of this worker's, which the job never
//! sees; the job's bytes only ever travel inside frames, so nothing it prints ends a job. A
//! channel whose runner misbehaves (a bad frame, another nonce, an early close) is dropped,
//! never reused.
//!
//! Each idle runner holds a made sandbox (a uid of the host's pool). The pool keeps `AHEAD`
//! idle runners ahead of the jobs, so a runner that just finished a job has time to make its next
//! sandbox while another serves, and never holds more channels than the connection's
//! `channels_per_connection` with the channels of `sandbox run` jobs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt as _;
use rand_core::{OsRng, RngCore};
use russh::ChannelMsg;
use tokio::io::AsyncWriteExt;

use super::channel::ExecChannel;
use super::exec::Event;
use super::pool::Connection;
use super::request;
use super::upload::Upload;

/// The runner's first line once it is ready for jobs.
const GREETING: &[u8] = b"openshell-serve 1\n";
/// How long a new runner may take to greet.
const GREETING_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest frame header line.
const HEADER_MAX: usize = 160;
/// Idle runners kept ahead of the jobs on a connection: a runner that just finished makes its
/// next sandbox while these serve.
const AHEAD: usize = 2;
/// Largest output frame (the runner sends at most 64 KiB at a time).
const FRAME_MAX: usize = 1 << 20;

/// One channel running `sandbox serve`.
pub struct ServeChannel {
    channel: ExecChannel,
    buffer: Vec<u8>,
}

impl ServeChannel {
    /// Starts a runner on `connection` and asks it to make a sandbox of `shape` (disk, shm
    /// bytes) now. Fails with what the channel said when the runner does not greet.
    pub async fn open(
        connection: &Connection,
        helper: &str,
        shape: (u64, u64),
    ) -> Result<Self, String> {
        let channel = ExecChannel::start(&connection.handle, &request::serve_command(helper))
            .await
            .map_err(|error| format!("opening a serve channel failed: {error}"))?;
        let mut serve = Self {
            channel,
            buffer: Vec::new(),
        };
        tokio::time::timeout(GREETING_TIMEOUT, serve.greeting())
            .await
            .unwrap_or_else(|_| Err(format!("no greeting within {GREETING_TIMEOUT:?}")))?;
        let warm = format!("openshell-warm {} {}\n", shape.0, shape.1);
        serve
            .channel
            .writer()
            .data(warm.as_bytes())
            .await
            .map_err(|error| format!("writing to the runner failed: {error}"))?;
        Ok(serve)
    }

    /// False when the channel already said something while idle: the runner ended (its
    /// sandbox died with it, sshd restarted) or wrote out of turn. Such a runner is dropped
    /// before a job is sent to it.
    fn still_idle(&mut self) -> bool {
        self.channel.read.wait().now_or_never().is_none()
    }

    async fn greeting(&mut self) -> Result<(), String> {
        let mut stderr = Vec::new();
        while self.buffer.len() < GREETING.len() {
            match self.channel.read.wait().await {
                Some(ChannelMsg::Data { data }) => self.buffer.extend_from_slice(&data),
                Some(ChannelMsg::ExtendedData { data, .. }) => stderr.extend_from_slice(&data),
                Some(ChannelMsg::Close) | None => {
                    return Err(format!(
                        "the runner ended before it was ready: {}",
                        String::from_utf8_lossy(&stderr).trim()
                    ));
                }
                Some(_) => {}
            }
        }
        if !self.buffer.starts_with(GREETING) {
            return Err("the runner's greeting is not `openshell-serve 1`".into());
        }
        self.buffer.drain(..GREETING.len());
        Ok(())
    }

    /// The bytes of one job: its frame line, the helper's request and the sandbox's stdin.
    pub fn job_frame(nonce: &str, upload: &Upload, stdin: &[u8]) -> Vec<u8> {
        let (request, rest) = upload.prefix.split_at(upload.request_len);
        let length = rest.len() + stdin.len();
        let mut frame = format!("openshell-job {nonce} {length}\n").into_bytes();
        frame.reserve(request.len() + length);
        frame.extend_from_slice(request);
        frame.extend_from_slice(rest);
        frame.extend_from_slice(stdin);
        frame
    }

    /// Writes `frame` in the background; the channel stays open for the next job.
    pub fn feed(&self, frame: Vec<u8>) -> tokio::task::JoinHandle<bool> {
        let mut writer = self.channel.writer().make_writer();
        tokio::spawn(async move {
            writer.write_all(&frame).await.is_ok() && writer.flush().await.is_ok()
        })
    }

    /// The events of the job sent with `nonce`, ending at its end line.
    pub fn events<'a>(&'a mut self, nonce: &'a str) -> JobEvents<'a> {
        JobEvents {
            serve: self,
            nonce,
            pending: VecDeque::new(),
            ended: false,
            done: false,
        }
    }
}

/// The next whole frame at the start of `buffer` (taken off it), `Ok(None)` when more bytes are
/// needed.
fn parse_frame(buffer: &mut Vec<u8>) -> Result<Option<Frame>, String> {
    let Some(end) = buffer.iter().take(HEADER_MAX).position(|&b| b == b'\n') else {
        return if buffer.len() >= HEADER_MAX {
            Err("a frame header is too long".into())
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buffer[..end])
        .map_err(|_| "a frame header is not text".to_string())?
        .to_string();
    let frame = match line.split_once(' ') {
        Some((tag @ ("o" | "e"), length)) => {
            let length: usize = length
                .parse()
                .ok()
                .filter(|&length| length <= FRAME_MAX)
                .ok_or_else(|| format!("bad frame length in `{line}`"))?;
            if buffer.len() < end + 1 + length {
                return Ok(None);
            }
            let bytes = buffer[end + 1..end + 1 + length].to_vec();
            buffer.drain(..end + 1 + length);
            return Ok(Some(if tag == "o" {
                Frame::Stdout(bytes)
            } else {
                Frame::Stderr(bytes)
            }));
        }
        Some(("end", rest)) => {
            Frame::End(End::parse(rest).ok_or_else(|| format!("bad end line `{line}`"))?)
        }
        _ => return Err(format!("unknown frame `{}`", line.escape_debug())),
    };
    buffer.drain(..=end);
    Ok(Some(frame))
}

/// A frame from the runner.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Frame {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    End(End),
}

/// The end line of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
struct End {
    nonce: String,
    exit: Option<i32>,
    signal: Option<i32>,
}

impl End {
    /// `NONCE exit=N|signal=N cpu_ms=N oom=N`.
    fn parse(text: &str) -> Option<Self> {
        let mut words = text.split(' ');
        let nonce = words.next()?.to_string();
        let mut end = Self {
            nonce,
            exit: None,
            signal: None,
        };
        for word in words {
            let (key, value) = word.split_once('=')?;
            let value: i64 = value.parse().ok()?;
            match key {
                "exit" => end.exit = Some(i32::try_from(value).ok()?),
                "signal" => end.signal = Some(i32::try_from(value).ok()?),
                _ => {}
            }
        }
        (end.exit.is_some() != end.signal.is_some()).then_some(end)
    }
}

/// One job's events on a serve channel.
pub struct JobEvents<'a> {
    serve: &'a mut ServeChannel,
    nonce: &'a str,
    pending: VecDeque<Event>,
    /// The end line with this job's nonce arrived: the channel is in step for another job.
    pub ended: bool,
    done: bool,
}

impl JobEvents<'_> {
    /// The next event; `None` when the runner went away or broke the protocol.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            match parse_frame(&mut self.serve.buffer) {
                Ok(Some(Frame::Stdout(bytes))) => return Some(Event::Stdout(bytes)),
                Ok(Some(Frame::Stderr(bytes))) => return Some(Event::Stderr(bytes)),
                Ok(Some(Frame::End(end))) => {
                    self.done = true;
                    if end.nonce != self.nonce {
                        tracing::warn!(
                            "a runner ended a job with another nonce: dropping its channel"
                        );
                        return None;
                    }
                    self.ended = true;
                    if let Some(code) = end.exit {
                        self.pending.push_back(Event::Exit(code));
                    }
                    if let Some(number) = end.signal {
                        self.pending.push_back(Event::Signal {
                            number,
                            unnamed: false,
                        });
                    }
                    self.pending.push_back(Event::Closed);
                    continue;
                }
                Ok(None) => {}
                Err(cause) => {
                    tracing::warn!(
                        "a runner broke the frame protocol ({cause}): dropping its channel"
                    );
                    self.done = true;
                    return None;
                }
            }
            match self.serve.channel.read.wait().await {
                Some(ChannelMsg::Data { data }) => self.serve.buffer.extend_from_slice(&data),
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    tracing::warn!(stderr = %String::from_utf8_lossy(&data).trim(), "the runner wrote to its stderr");
                }
                Some(ChannelMsg::Close) | None => {
                    self.done = true;
                    return None;
                }
                Some(_) => {}
            }
        }
    }
}

/// A fresh 128-bit nonce, as 32 hex digits.
pub fn nonce() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The idle runners of one connection.
#[derive(Default)]
pub struct Runners {
    idle: Mutex<VecDeque<ServeChannel>>,
    /// Runners being opened in the background.
    opening: AtomicUsize,
    /// The host refused a runner: this connection runs every job with `sandbox run`.
    refused: AtomicBool,
}

impl Runners {
    /// Whether jobs on this connection may go to a runner.
    pub fn usable(&self) -> bool {
        !self.refused.load(Ordering::Relaxed)
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, VecDeque<ServeChannel>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The runner that has been idle longest, or a new one; `Err` with the cause when none
    /// can be had (and, if the host refused it, this connection stops asking).
    pub async fn take(
        connection: &Arc<Connection>,
        helper: &str,
        shape: (u64, u64),
    ) -> Result<ServeChannel, String> {
        let idle = loop {
            let next = connection.runners.idle().pop_front();
            match next {
                Some(mut serve) => {
                    if serve.still_idle() {
                        break Some(serve);
                    }
                    tracing::debug!(host = %connection.addr, "an idle runner ended: dropping it");
                }
                None => break None,
            }
        };
        let serve = match idle {
            Some(serve) => serve,
            None => ServeChannel::open(connection, helper, shape)
                .await
                .inspect_err(|cause| {
                    if cause.contains("before it was ready") {
                        connection.runners.refused.store(true, Ordering::Relaxed);
                    }
                })?,
        };
        Self::keep_ahead(connection, helper, shape);
        Ok(serve)
    }

    /// Puts a runner that ended its job in step back in line.
    pub fn give_back(&self, serve: ServeChannel) {
        self.idle().push_back(serve);
    }

    /// Drops an idle runner when a channel of its own (`sandbox run`, a session's) needs its
    /// place under `channels_per_connection`; one more is left free for an egress job's
    /// set-up command.
    pub fn make_room(&self, leases: usize, channels: usize) {
        let mut idle = self.idle();
        while !idle.is_empty()
            && idle.len() + self.opening.load(Ordering::Relaxed) + leases >= channels
        {
            idle.pop_front();
        }
    }

    /// Opens another runner in the background when fewer than `AHEAD` are idle and the
    /// connection has room, so the next job finds a sandbox made.
    fn keep_ahead(connection: &Arc<Connection>, helper: &str, shape: (u64, u64)) {
        let runners = &connection.runners;
        let used = runners.idle().len() + runners.opening.load(Ordering::Relaxed);
        if used >= AHEAD || used + connection.leases() >= connection.channels || !connection.alive()
        {
            return;
        }
        runners.opening.fetch_add(1, Ordering::Relaxed);
        let (connection, helper) = (connection.clone(), helper.to_string());
        tokio::spawn(async move {
            let opened = ServeChannel::open(&connection, &helper, shape).await;
            connection.runners.opening.fetch_sub(1, Ordering::Relaxed);
            match opened {
                Ok(serve) => connection.runners.give_back(serve),
                Err(cause) => tracing::debug!(host = %connection.addr, "no runner ahead: {cause}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bytes: &[u8]) -> Vec<Frame> {
        let mut buffer = bytes.to_vec();
        let mut out = Vec::new();
        while let Ok(Some(frame)) = parse_frame(&mut buffer) {
            out.push(frame);
        }
        out
    }

    fn parse(buffer: &mut Vec<u8>) -> Result<Option<Frame>, String> {
        parse_frame(buffer)
    }

    #[test]
    fn output_is_framed_and_a_forged_end_inside_it_is_output() {
        let nonce = "0".repeat(32);
        let forged = format!("end {nonce} exit=0\n");
        let stream = format!(
            "o {}\n{forged}e 3\nerrend {nonce} signal=9 cpu_ms=3 oom=1\n",
            forged.len()
        );
        let parsed = frames(stream.as_bytes());
        assert_eq!(
            parsed,
            [
                Frame::Stdout(forged.into_bytes()),
                Frame::Stderr(b"err".to_vec()),
                Frame::End(End {
                    nonce,
                    exit: None,
                    signal: Some(9)
                }),
            ]
        );
    }

    #[test]
    fn bad_frames_are_errors_and_partial_ones_wait() {
        assert_eq!(parse(&mut b"o 5\nhel".to_vec()), Ok(None));
        assert_eq!(parse(&mut b"o 5".to_vec()), Ok(None));
        assert!(parse(&mut b"x 5\nhello".to_vec()).is_err());
        assert!(parse(&mut b"o 99999999\n".to_vec()).is_err());
        assert!(parse(&mut b"end abc exit=1 signal=2\n".to_vec()).is_err());
        assert!(parse(&mut vec![b'o'; 400]).is_err());
    }

    #[test]
    fn nonces_are_128_random_bits() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
