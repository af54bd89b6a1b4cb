//! A job's files as the sandbox's pid 1 sends them after its output (the format is at the top
//! of `deploy/ssh-host/sandbox-init`): [`Trailer`] splits stdout into the job's output and the
//! files part at the marker line, and [`parse`] reads that part through the shared
//! [`Collector`], which applies the patterns and caps exactly as on the other backends.

use std::hash::{BuildHasher, Hasher};

use openshell_backend::files::{Collector, EntryKind};
use openshell_backend::{CollectedFiles, FilesRequest};

/// Bytes of entry lines allowed in the files part besides the files' own bytes.
const ENTRY_ROOM: usize = 16 << 20;

/// A random marker token, below 10^18 so it fits the helper's number format.
pub fn token() -> u64 {
    // Randomly keyed per call, as HashMap's seeds are.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x6f70_656e_7368_656c);
    hasher.finish() % 1_000_000_000_000_000_000
}

/// Splits a job's stdout at the files marker.
#[derive(Debug, Default)]
pub struct Trailer {
    marker: Vec<u8>,
    /// Output held back because it may be the start of the marker.
    held: Vec<u8>,
    found: bool,
    data: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Trailer {
    /// A splitter looking for `marker`, keeping at most `max_bytes` of files (plus entry
    /// lines) after it; no marker: everything is output.
    pub fn new(marker: Option<Vec<u8>>, max_bytes: u64) -> Self {
        Self {
            marker: marker.unwrap_or_default(),
            limit: usize::try_from(max_bytes)
                .unwrap_or(usize::MAX)
                .saturating_add(ENTRY_ROOM),
            ..Self::default()
        }
    }

    /// True once the marker was seen: the job's own process has ended.
    pub fn found(&self) -> bool {
        self.found
    }

    /// Takes the next bytes of stdout; returns those that are the job's output.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.found {
            self.keep(bytes);
            return Vec::new();
        }
        if self.marker.is_empty() {
            return bytes.to_vec();
        }
        self.held.extend_from_slice(bytes);
        if let Some(at) = find(&self.held, &self.marker) {
            let rest = self.held.split_off(at + self.marker.len());
            self.held.truncate(at);
            self.found = true;
            self.keep(&rest);
            return std::mem::take(&mut self.held);
        }
        // Keep back only a tail that could still become the marker.
        let keep = (1..self.marker.len().min(self.held.len() + 1))
            .rev()
            .find(|&n| self.held.ends_with(&self.marker[..n]))
            .unwrap_or(0);
        let output_len = self.held.len() - keep;
        let tail = self.held.split_off(output_len);
        std::mem::replace(&mut self.held, tail)
    }

    /// Output still held back, at the end of a job that never printed the marker.
    pub fn flush(&mut self) -> Vec<u8> {
        if self.found {
            Vec::new()
        } else {
            std::mem::take(&mut self.held)
        }
    }

    /// The files part, unless it was larger than allowed.
    pub fn files_part(&self) -> Option<&[u8]> {
        (self.found && !self.overflowed).then_some(self.data.as_slice())
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.data.len() + bytes.len() > self.limit {
            self.overflowed = true;
        } else if !self.overflowed {
            self.data.extend_from_slice(bytes);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The files in `part` (what followed the marker), as `request` selects them; `None` when it
/// is cut short or malformed.
pub fn parse(part: &[u8], request: &FilesRequest) -> Option<CollectedFiles> {
    let mut collector = Collector::new(request);
    let mut rest = part;
    loop {
        let end = rest.iter().position(|&byte| byte == b'\n')?;
        let line = std::str::from_utf8(&rest[..end]).ok()?;
        rest = &rest[end + 1..];
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["end"] => return Some(collector.finish()),
            ["entry", kind, size, hex] => {
                let kind = match *kind {
                    "file" => EntryKind::File,
                    "symlink" => EntryKind::Symlink,
                    _ => EntryKind::Other,
                };
                let path = unhex(hex)?;
                if collector.offer(&path, kind, size.parse().ok()?) {
                    // Sent as an entry but acceptable here: the rules disagree; say so.
                    tracing::warn!(%path, "the SSH host withheld a file the worker would return");
                }
            }
            ["file", size, hex] => {
                let size: usize = size.parse().ok()?;
                let path = unhex(hex)?;
                let content = rest.get(..size)?.to_vec();
                rest = &rest[size..];
                if collector.offer(&path, EntryKind::File, size as u64) {
                    collector.add(&path, content);
                }
            }
            _ => return None,
        }
    }
}

fn unhex(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use openshell_protocol::{FilesStatus, OutputPattern, SkipReason};

    use super::*;

    #[test]
    fn the_marker_splits_output_from_files_however_the_bytes_arrive() {
        let stream = b"hello @open\nworld\n@openshell-files 42\nfile 2 6869\nhiend\n";
        for split in 0..stream.len() {
            let mut trailer = Trailer::new(Some(b"@openshell-files 42\n".to_vec()), 100);
            let mut output = trailer.feed(&stream[..split]);
            output.extend(trailer.feed(&stream[split..]));
            output.extend(trailer.flush());
            assert_eq!(output, b"hello @open\nworld\n", "split at {split}");
            assert_eq!(trailer.files_part(), Some(&b"file 2 6869\nhiend\n"[..]));
        }
        let mut plain = Trailer::new(Some(b"@openshell-files 42\n".to_vec()), 100);
        let mut output = plain.feed(b"ends with @openshell-fi");
        assert_eq!(output, b"ends with ");
        output.extend(plain.flush());
        assert_eq!(output, b"ends with @openshell-fi");
        assert!(!plain.found());
    }

    #[test]
    fn the_files_part_goes_through_the_collector() {
        let request = FilesRequest {
            patterns: vec![OutputPattern::parse("*").unwrap()],
            max_files: 1,
            max_bytes: 100,
        };
        // a.txt = "hi", b.txt withheld (count cap), c.txt a symlink.
        let part =
            b"file 2 612e747874\nhientry file 3 622e747874\nentry symlink 0 632e747874\nend\n";
        let files = parse(part, &request).expect("parsed");
        assert_eq!(files.files.len(), 1);
        assert_eq!(files.files[0].content, b"hi");
        assert_eq!(files.status, FilesStatus::TooManyFiles);
        let reasons: Vec<_> = files.skipped.iter().map(|s| s.reason).collect();
        assert_eq!(reasons, [SkipReason::CountCap, SkipReason::Symlink]);
        assert!(
            parse(b"file 2 612e747874\nh", &request).is_none(),
            "cut short"
        );
    }
}
