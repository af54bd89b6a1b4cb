//! The examples of protocol/README.md, shared by the schema test (`protocol/tests/schema.rs`)
//! and the live test that sends them to a real worker (`worker/tests/protocol_examples.rs`,
//! which includes this file by path).
//!
//! Every ```json block of the README follows a marker `<!-- example: KIND FLAG... -->`:
//!
//! | kind | what the block is |
//! |---|---|
//! | `request` | an execution request, sent as shown (byte for byte) |
//! | `result` | the result a worker answers (or stores) for the request with the same `id` |
//! | `audit` | an audit event of the request with the same `id` |
//! | `output` | a chunk of live output |
//! | `fetch` | a file fetch, sent for the job whose result example lists a stored file at its path |
//! | `srv-info` | a worker's `$SRV.INFO` reply |
//! | `srv-stats` | a worker's `$SRV.STATS` reply |
//!
//! Flags of a `request`: `invalid` (the worker refuses it; the schema test checks the decoder
//! does), `durable` (queued on its job subject instead of sent as a core request), `cancel`
//! (with `durable`: cancelled while it is still queued).

// Each test crate uses only part of this module.
#![allow(dead_code)]

use std::path::Path;

use openshell_protocol::schema::Message;

/// What an example block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A message of the wire protocol.
    Message(Message),
    /// A `$SRV.INFO` reply.
    SrvInfo,
    /// A `$SRV.STATS` reply.
    SrvStats,
}

/// The flags a marker may carry.
const FLAGS: [&str; 3] = ["invalid", "durable", "cancel"];

/// One example: its kind and flags, where it is, and its text.
#[derive(Debug, Clone)]
pub struct Example {
    /// What the block is.
    pub kind: Kind,
    /// Flags after the kind in the marker.
    pub flags: Vec<String>,
    /// Line of the ```json fence.
    pub line: usize,
    /// The block's text, lines joined with `\n`, without a trailing newline.
    pub json: String,
}

impl Example {
    /// Names the example in assertion messages.
    pub fn what(&self) -> String {
        format!(
            "protocol/README.md example at line {} ({:?})",
            self.line, self.kind
        )
    }

    /// Whether the marker carries `flag`.
    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|own| own == flag)
    }

    /// The protocol message this example is, if it is one.
    pub fn message(&self) -> Option<Message> {
        match self.kind {
            Kind::Message(message) => Some(message),
            _ => None,
        }
    }

    /// The block as JSON.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(&self.json)
            .unwrap_or_else(|error| panic!("{} is not JSON: {error}", self.what()))
    }
}

fn kind_named(name: &str) -> Option<Kind> {
    match name {
        "request" => Some(Kind::Message(Message::Request)),
        "result" => Some(Kind::Message(Message::Result)),
        "audit" => Some(Kind::Message(Message::Audit)),
        "output" => Some(Kind::Message(Message::Output)),
        "fetch" => Some(Kind::Message(Message::FileFetch)),
        "checkpoint" => Some(Kind::Message(Message::Checkpoint)),
        "session-open" => Some(Kind::Message(Message::SessionOpen)),
        "session-opened" => Some(Kind::Message(Message::SessionOpened)),
        "session-close" => Some(Kind::Message(Message::SessionClose)),
        "session-closed" => Some(Kind::Message(Message::SessionClosed)),
        "session-error" => Some(Kind::Message(Message::SessionError)),
        "srv-info" => Some(Kind::SrvInfo),
        "srv-stats" => Some(Kind::SrvStats),
        _ => None,
    }
}

/// Every ```json block of the README at `path`, each of which must follow a marker.
pub fn examples(path: &Path) -> Vec<Example> {
    let readme = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    let mut examples = Vec::new();
    let mut marker: Option<(Kind, Vec<String>, usize)> = None;
    let mut lines = readme
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line));
    while let Some((number, line)) = lines.next() {
        let trimmed = line.trim();
        if let Some(words) = trimmed
            .strip_prefix("<!-- example:")
            .and_then(|rest| rest.strip_suffix("-->"))
        {
            let mut words = words.split_whitespace();
            let name = words.next().unwrap_or_default();
            let kind = kind_named(name).unwrap_or_else(|| {
                panic!("README.md line {number}: unknown example kind `{name}`")
            });
            let flags: Vec<String> = words.map(str::to_string).collect();
            if let Some(flag) = flags.iter().find(|flag| !FLAGS.contains(&flag.as_str())) {
                panic!("README.md line {number}: unknown example flag `{flag}`");
            }
            marker = Some((kind, flags, number));
        } else if trimmed == "```json" {
            let (kind, flags, _) = marker.take().unwrap_or_else(|| {
                panic!(
                    "README.md line {number}: a ```json block without an `<!-- example: KIND -->` \
                     marker above it; mark it so it is checked, or use another fence"
                )
            });
            let json: Vec<&str> = lines
                .by_ref()
                .map(|(_, line)| line)
                .take_while(|line| line.trim() != "```")
                .collect();
            examples.push(Example {
                kind,
                flags,
                line: number,
                json: json.join("\n"),
            });
        } else if !trimmed.is_empty() && marker.as_ref().is_some_and(|(.., at)| number > at + 2) {
            panic!(
                "README.md line {number}: an example marker must be right above its ```json block"
            );
        }
    }
    assert!(
        marker.is_none(),
        "README.md ends with a marker and no example"
    );
    examples
}

/// The `id` (requests, results) or `job_id` (audit events) of an example, read without
/// decoding it (an `invalid` request does not decode).
pub fn job_id(example: &Example) -> Option<String> {
    let value = example.value();
    let id = value.get("id").or_else(|| value.get("job_id"))?;
    id.as_str().map(str::to_string)
}
