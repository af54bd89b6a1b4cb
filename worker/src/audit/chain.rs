//! The worker's hash chain: every audit event gets `chain`, `seq` and `prev` here, in the order
//! it is published (see `openshell_protocol::audit::chain` for the rules).
//!
//! Jobs publish concurrently, so the place in the chain and the publication must happen
//! together: a [`Link`] holds the chain's lock from sealing an event until it was handed to the
//! connection, and NATS keeps one connection's messages in order. Waiting for the server (a
//! flush or the stream's ack) happens after the lock is released, so audit-before-run waits no
//! longer than before.

use chrono::{DateTime, Utc};
use openshell_protocol::AuditEvent;
use openshell_protocol::audit::{GENESIS_HASH, UnstoredEvent};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, MutexGuard};

/// One worker process's chain of audit events.
#[derive(Debug)]
pub struct Chain {
    id: String,
    worker_id: String,
    started: DateTime<Utc>,
    state: Mutex<State>,
}

/// How far the chain reached.
#[derive(Debug)]
pub struct State {
    /// `seq` of the last event published (0: none yet).
    pub seq: u64,
    /// Its hash ([`GENESIS_HASH`] when none).
    pub hash: String,
    /// Events the audit stream did not acknowledge since the last checkpoint.
    pub unstored: Vec<UnstoredEvent>,
}

impl Chain {
    /// A new chain of `worker_id`, with a random id.
    pub fn new(worker_id: &str) -> Self {
        let mut bytes = [0u8; 16];
        OsRng.fill_bytes(&mut bytes);
        Self {
            id: hex(&bytes),
            worker_id: worker_id.to_string(),
            started: Utc::now(),
            state: Mutex::new(State {
                seq: 0,
                hash: GENESIS_HASH.to_string(),
                unstored: Vec::new(),
            }),
        }
    }

    /// The chain's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The worker whose chain it is.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// When the chain began.
    pub fn started(&self) -> DateTime<Utc> {
        self.started
    }

    /// Takes the chain's lock: the next event is sealed and published through the [`Link`].
    pub async fn link(&self) -> Link<'_> {
        Link {
            chain: self,
            state: self.state.lock().await,
        }
    }

    /// Records that event `seq` with `hash` was published but not acknowledged by the stream.
    pub async fn unstored(&self, seq: u64, hash: String) {
        self.state
            .lock()
            .await
            .unstored
            .push(UnstoredEvent { seq, hash });
    }
}

/// The chain, locked for one publication.
#[derive(Debug)]
pub struct Link<'a> {
    chain: &'a Chain,
    state: MutexGuard<'a, State>,
}

/// An event sealed into the chain: its payload, and its place.
#[derive(Debug)]
pub struct Sealed {
    /// The event's JSON, chain fields included: exactly what is published and hashed.
    pub payload: Vec<u8>,
    /// Its `seq`.
    pub seq: u64,
    /// SHA-256 of `payload`, lowercase hex.
    pub hash: String,
}

impl Link<'_> {
    /// `event` as the chain's next event. Nothing changes until [`Link::commit`].
    pub fn seal(&self, event: &AuditEvent) -> Result<Sealed, serde_json::Error> {
        let seq = self.state.seq + 1;
        let event = AuditEvent {
            chain: Some(self.chain.id.clone()),
            seq: Some(seq),
            prev: Some(self.state.hash.clone()),
            ..event.clone()
        };
        let payload = serde_json::to_vec(&event)?;
        let hash = sha256_hex(&payload);
        Ok(Sealed { payload, seq, hash })
    }

    /// Makes the sealed event `seq` with `hash`, now handed to the connection, the chain's
    /// last event.
    pub fn commit(&mut self, seq: u64, hash: &str) {
        self.state.seq = seq;
        hash.clone_into(&mut self.state.hash);
    }

    /// The chain's state, for a checkpoint made under the lock.
    pub fn state(&mut self) -> &mut State {
        &mut self.state
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `text` as bytes, when it is hex (either case) of exactly `N` bytes.
pub fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (index, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * index..2 * index + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openshell_protocol::audit::AuditContext;

    #[tokio::test]
    async fn events_are_linked_by_the_hash_of_the_previous_payload() {
        let chain = Chain::new("w1");
        let event = AuditEvent::rejected_raw(
            "j",
            b"x",
            openshell_protocol::ErrorInfo::new(openshell_protocol::ErrorKind::InvalidRequest, "no"),
            &AuditContext::default(),
        );
        let mut link = chain.link().await;
        let first = link.seal(&event).unwrap();
        link.commit(first.seq, &first.hash);
        let second = link.seal(&event).unwrap();
        let parsed: AuditEvent = serde_json::from_slice(&second.payload).unwrap();
        assert_eq!(parsed.seq, Some(2));
        assert_eq!(parsed.prev, Some(sha256_hex(&first.payload)));
        let parsed: AuditEvent = serde_json::from_slice(&first.payload).unwrap();
        assert_eq!(parsed.prev.as_deref(), Some(GENESIS_HASH));
        assert_eq!(unhex::<2>("0aFf"), Some([10, 255]));
        assert_eq!(unhex::<2>("0aF"), None);
    }

    /// What the chain adds per event: the clone, the hash and the lock, next to the
    /// serialization every event had before. Per job: three events (`received`, `started`,
    /// `finished`); a checkpoint's signature is per interval, not per job.
    #[tokio::test]
    #[ignore = "a measurement: cargo test --release -p openshell-worker --lib audit::chain::tests::cost -- --ignored --nocapture"]
    async fn cost() {
        use std::time::Instant;
        let mut request =
            openshell_protocol::ExecRequest::command("build-7", vec!["sh".into(), "run.sh".into()]);
        request.args = vec!["data.bin".into()];
        let context = AuditContext {
            tenant: "default".into(),
            pool: "none".into(),
            backend: "none".into(),
            worker_id: "worker-a1".into(),
            traceparent: None,
        };
        let big = openshell_protocol::ExecRequest::code("big", "sh", "#".repeat(1_000_000));
        let chain = Chain::new("worker-a1");
        for (name, request, rounds) in [("typical", &request, 20_000u32), ("1 MB code", &big, 200)]
        {
            let event = AuditEvent::for_request(
                openshell_protocol::AuditEventType::Received,
                request,
                779,
                &openshell_protocol::Limits::default(),
                &context,
            );
            let start = Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(serde_json::to_vec(&event).unwrap());
            }
            let before = start.elapsed() / rounds;
            let start = Instant::now();
            for _ in 0..rounds {
                let mut link = chain.link().await;
                let sealed = link.seal(&event).unwrap();
                link.commit(sealed.seq, &sealed.hash);
            }
            let after = start.elapsed() / rounds;
            println!(
                "{name} event: serialized alone {before:?}, sealed into the chain {after:?}: {:?} more per event",
                after.saturating_sub(before)
            );
        }
        let key = super::super::AuditKey::ephemeral();
        let message = [0u8; 300];
        let start = Instant::now();
        for _ in 0..2_000 {
            std::hint::black_box(key.sign_hex(&message));
        }
        println!("checkpoint signature: {:?}", start.elapsed() / 2_000);
    }
}
