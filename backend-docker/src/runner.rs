//! The resident runner: the `sh` script each sandbox container runs as its main process (under
//! Docker's init). It waits on its attached stdin for exactly one job frame, runs the job, says
//! how it ended, then only keeps the container alive until the backend destroys it. The hot
//! path is therefore a write and a read on a connection the warm pool attached in advance:
//! no exec to create, start or poll.
//!
//! The frame is a length line, then that many bytes of shell text setting `nonce` and the
//! job's words (`env -- KEY=value... /bin/sh -c PROLOGUE openshell ARGV...`, the `command`
//! prologue unchanged). Everything after the frame on stdin is the prologue's tar then the
//! job's own stdin, so the job inherits the stream as an exec would have. `head -c` reads
//! exactly the frame's bytes (as the prologue relies on for the tar).
//!
//! Once the job's program has exited, and the processes still holding its output have had
//! [`super::attach`]'s grace, the runner writes an end marker, `openshell-end:NONCE:CODE:HELD`,
//! on stdout and on stderr: each stream's marker follows all of that stream's job output, so
//! nothing is cut. The nonce is random per job, so no output matches it by chance; a job that
//! forges the marker (reading the nonce from the runner's memory, or tracing the runner, which
//! runs as its user) can misreport its own exit code, cut its own output and skip the runner's
//! `kill -9 -1`: every process of the container is stopped right after a clean end (SIGSTOP
//! through its cgroup, else the engine's SIGKILL: `Sandbox::remove_when_quiet`), so what it
//! left cannot run on while the container waits for its removal. The script needs only a
//! POSIX `sh` (with `kill`), `head`, `env` and `sleep`, as the exec it replaces did: images users bring
//! keep working, and one without a shell fails to start with the engine's message.

use std::fmt::Write as _;

use rand_core::{OsRng, RngCore};

use super::command::{Command, quote};

/// The runner, run as `sh -c RUNNER openshell-runner`.
///
/// `held` lists the processes other than init and the runner whose descriptors still point at
/// the runner's stdout or stderr: output still open. They get about a second (100 rounds of
/// `sleep 0.01`, ended early if `sleep` cannot fork at the pids limit) before the marker says
/// they held it. Then the runner kills every process the job left (`kill -9 -1`: all of the
/// job's user's processes but the runner and the init), so a used container idles with nothing
/// of the job running until its removal, which can then wait for a quiet moment. A frame that
/// is not a length line ends the runner (and the container).
const SCRIPT: &str = r#"IFS= read -r n || exit 0
case $n in ''|*[!0-9]*) echo 'openshell: the job frame has no length' >&2; exit 125;; esac
eval "$(head -c "$n")"
(exec "$@")
code=$?
held() {
  for p in /proc/[0-9]*; do
    case ${p#/proc/} in 1|$$) continue;; esac
    for f in "$p"/fd/*; do
      if [ "$f" -ef /proc/$$/fd/1 ] || [ "$f" -ef /proc/$$/fd/2 ]; then return 0; fi
    done
  done 2>/dev/null
  return 1
}
open=0
if held; then
  i=0
  while [ $i -lt 100 ] && held; do sleep 0.01 2>/dev/null || break; i=$((i + 1)); done
  held && open=1
fi
kill -9 -1 2>/dev/null
printf 'openshell-end:%s:%s:%s\n' "$nonce" "$code" "$open"
printf 'openshell-end:%s:%s:%s\n' "$nonce" "$code" "$open" >&2
exec sleep infinity
"#;

/// The container's entrypoint: the runner.
pub(super) fn entrypoint() -> Vec<String> {
    ["/bin/sh", "-c", SCRIPT, "openshell-runner"]
        .map(String::from)
        .to_vec()
}

/// A random nonce for one job's end marker: 128 bits from the OS generator, in hex.
pub(super) fn nonce() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

/// The frame that hands `command` to a waiting runner, with `nonce` for its end marker.
pub(super) fn frame(command: &Command, nonce: &str) -> Vec<u8> {
    let mut script = format!("nonce={nonce}\nset -- env --");
    for word in command.env.iter().chain(&command.cmd) {
        script.push(' ');
        script.push_str(&quote(word));
    }
    script.push('\n');
    let mut frame = format!("{}\n", script.len()).into_bytes();
    frame.extend_from_slice(script.as_bytes());
    frame
}

/// How the runner said the job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct End {
    /// The program's exit status as `sh` tells it (128 + N for signal N).
    pub exit_code: Option<i64>,
    /// Processes still held the output after the grace.
    pub held: bool,
}

/// Finds the end marker in one output stream, passing the job's bytes before it through and
/// holding back only a tail that could be the marker's beginning.
#[derive(Debug)]
pub(super) struct Marker {
    prefix: Vec<u8>,
    pending: Vec<u8>,
    end: Option<End>,
}

/// Longest marker line after its prefix (`CODE:HELD\n`): anything longer is job output.
const MAX_TAIL: usize = 32;

impl Marker {
    /// A matcher for the marker carrying `nonce`.
    pub fn new(nonce: &str) -> Self {
        Self {
            prefix: format!("openshell-end:{nonce}:").into_bytes(),
            pending: Vec::new(),
            end: None,
        }
    }

    /// The end, once the marker was read.
    pub fn end(&self) -> Option<End> {
        self.end
    }

    /// Takes the next `bytes` of the stream; returns the job output they complete. After the
    /// marker everything is dropped.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.end.is_some() {
            return Vec::new();
        }
        self.pending.extend_from_slice(bytes);
        if let Some(at) = find(&self.pending, &self.prefix) {
            let rest = &self.pending[at + self.prefix.len()..];
            if let Some(newline) = rest.iter().position(|&byte| byte == b'\n') {
                let end = parse(&rest[..newline]);
                if let Some(end) = end {
                    self.end = Some(end);
                    let output = self.pending[..at].to_vec();
                    self.pending.clear();
                    return output;
                }
            } else if rest.len() <= MAX_TAIL {
                let output = self.pending[..at].to_vec();
                self.pending.drain(..at);
                return output;
            }
            // Not a marker after all: the prefix was output; pass it on.
            let cut = at + 1;
            let mut output: Vec<u8> = self.pending.drain(..cut).collect();
            output.extend(self.feed(&[]));
            return output;
        }
        let keep = partial_suffix(&self.pending, &self.prefix);
        let output: Vec<u8> = self.pending.drain(..self.pending.len() - keep).collect();
        output
    }

    /// What was held back when the stream ended without a marker: job output.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The length of the longest tail of `bytes` that is a proper beginning of `prefix`.
fn partial_suffix(bytes: &[u8], prefix: &[u8]) -> usize {
    (1..prefix.len().min(bytes.len() + 1))
        .rev()
        .find(|&len| bytes.ends_with(&prefix[..len]))
        .unwrap_or(0)
}

fn parse(line: &[u8]) -> Option<End> {
    let line = std::str::from_utf8(line).ok()?;
    let (code, held) = line.split_once(':')?;
    Some(End {
        exit_code: Some(code.parse().ok()?),
        held: match held {
            "0" => false,
            "1" => true,
            _ => return None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_is_a_length_line_then_the_nonce_and_quoted_words() {
        let command = Command {
            cmd: vec!["/bin/sh".into(), "-c".into(), "exec \"$@\"".into()],
            env: vec!["A=it's".into()],
            prologue_input: Vec::new(),
        };
        let frame = frame(&command, "ab12");
        let text = String::from_utf8(frame).unwrap();
        let (length, script) = text.split_once('\n').unwrap();
        assert_eq!(length.parse::<usize>().unwrap(), script.len());
        assert_eq!(
            script,
            "nonce=ab12\nset -- env -- 'A=it'\\''s' '/bin/sh' '-c' 'exec \"$@\"'\n"
        );
    }

    #[test]
    fn nonces_are_hex_and_differ() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    /// Feeds `chunks` and returns (output passed on, end).
    fn run(chunks: &[&[u8]]) -> (Vec<u8>, Option<End>) {
        let mut marker = Marker::new("n1");
        let mut output = Vec::new();
        for chunk in chunks {
            output.extend(marker.feed(chunk));
        }
        if marker.end().is_none() {
            output.extend(marker.finish());
        }
        (output, marker.end())
    }

    #[test]
    fn the_marker_ends_the_stream_wherever_the_chunks_split_it() {
        let stream = b"hello\nworldopenshell-end:n1:137:1\nlate";
        for split in 0..stream.len() {
            let (head, tail) = stream.split_at(split);
            let (output, end) = run(&[head, tail]);
            assert_eq!(output, b"hello\nworld", "split at {split}");
            assert_eq!(
                end,
                Some(End {
                    exit_code: Some(137),
                    held: true
                })
            );
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(run(&bytes).0, b"hello\nworld");
    }

    #[test]
    fn look_alikes_and_other_nonces_are_output() {
        for text in [
            &b"openshell-end:n2:0:0\n"[..],
            b"openshell-end:n1:x:0\nmore",
            b"openshell-end:n1",
            b"openshell-end:n1:0:0",
        ] {
            assert_eq!(run(&[text]), (text.to_vec(), None), "{text:?}");
        }
        let (output, end) = run(&[b"openshell-end:n1:x:0\nopenshell-end:n1:0:0\n"]);
        assert_eq!(output, b"openshell-end:n1:x:0\n");
        assert_eq!(end.map(|end| end.exit_code), Some(Some(0)));
    }
}
