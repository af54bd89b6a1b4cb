//! Session channels that are always closed, and short commands run on them.

use std::time::Duration;

use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};

use super::connect::SshHandle;

/// Tries to open a channel that sshd refuses (MaxSessions) before giving up.
const OPEN_ATTEMPTS: u32 = 8;
/// Pause after a refused channel, times the attempt number.
const OPEN_RETRY: Duration = Duration::from_millis(10);

/// An exec channel; dropping it sends CHANNEL_CLOSE, so sshd frees the session slot even
/// when the job's future is dropped mid-run.
pub struct ExecChannel {
    /// Messages from the server.
    pub read: ChannelReadHalf,
    write: Option<ChannelWriteHalf<Msg>>,
}

impl ExecChannel {
    /// Opens a session channel on `handle` and starts `command` on it. sshd frees a closed
    /// session slightly after the close, so a refusal at MaxSessions is retried briefly.
    pub async fn start(handle: &SshHandle, command: &str) -> Result<Self, russh::Error> {
        let mut attempt = 1;
        let channel = loop {
            match handle.channel_open_session().await {
                Err(russh::Error::ChannelOpenFailure(_)) if attempt < OPEN_ATTEMPTS => {
                    tokio::time::sleep(OPEN_RETRY * attempt).await;
                    attempt += 1;
                }
                other => break other?,
            }
        };
        let (read, write) = channel.split();
        let channel = Self {
            read,
            write: Some(write),
        };
        channel.writer().exec(true, command.as_bytes()).await?;
        Ok(channel)
    }

    /// The sending half: stdin, EOF, close.
    pub fn writer(&self) -> &ChannelWriteHalf<Msg> {
        self.write
            .as_ref()
            .expect("the write half lives until drop")
    }
}

impl Drop for ExecChannel {
    fn drop(&mut self) {
        let Some(write) = self.write.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = write.close().await;
            });
        }
    }
}

/// What a short command printed and how it ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Output {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Exit status, if the server sent one.
    pub status: Option<u32>,
}

/// Runs `command` with empty stdin and collects its output, within `limit`.
pub async fn run(handle: &SshHandle, command: &str, limit: Duration) -> Result<Output, String> {
    let attempt = async {
        let mut channel = ExecChannel::start(handle, command)
            .await
            .map_err(|error| format!("opening a channel failed: {error}"))?;
        let _ = channel.writer().eof().await;
        let mut output = Output::default();
        while let Some(message) = channel.read.wait().await {
            match message {
                ChannelMsg::Data { data } => output.stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } => output.stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => output.status = Some(exit_status),
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        Ok(output)
    };
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("`{command}` did not finish within {limit:?}")))
}

/// The number of a signal sshd reports by name.
pub fn signal_number(signal: &Sig) -> i32 {
    match signal {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(name) => match name.as_str() {
            "TRAP" => 5,
            "BUS" => 7,
            "USR2" => 12,
            "STKFLT" => 16,
            "CHLD" => 17,
            "CONT" => 18,
            "STOP" => 19,
            "TSTP" => 20,
            "XCPU" => 24,
            "XFSZ" => 25,
            "VTALRM" => 26,
            "PROF" => 27,
            "SYS" => 31,
            _ => 0,
        },
    }
}

/// True when `error` means the connection itself is unusable, not just one channel refused.
pub fn connection_lost(error: &russh::Error) -> bool {
    !matches!(error, russh::Error::ChannelOpenFailure(_))
}
