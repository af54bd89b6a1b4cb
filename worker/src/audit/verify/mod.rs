//! Checking an audit trail: every chain linked with no gap, change or reordering, every
//! checkpoint signed by a trusted key and matching the chain, every `started` preceded by its
//! `received`. Fed record by record in stream order ([`Verifier::feed`]), so it reads a stream
//! or an export of any length; it keeps per chain its position and the last
//! [`RECENT_HASHES`] hashes, and per job only the jobs still open.
//!
//! Retention removes the oldest messages of the audit stream, events and checkpoints alike:
//! what is left of a chain is then contiguous from its first retained record. A chain that
//! begins after `seq` 1 is reported as cut by retention (a warning, [`Report::cut`]) when
//! nothing retained of it names an earlier event: its first record is an event whose `prev`
//! nobody vouches for, or a checkpoint whose `seq` is right before the first event. A gap
//! after a retained record, or inside the chain, is tampering.

mod report;

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use openshell_protocol::audit::{CheckpointKind, GENESIS_HASH};
use openshell_protocol::{AuditCheckpoint, AuditEvent, AuditEventType};

pub use report::{Cut, Ending, Problem, Report, Spot};

use super::chain::sha256_hex;
use super::key::verify_hex;

/// How many recent event hashes are kept per chain to check the checkpoints that name them.
pub const RECENT_HASHES: usize = 4096;

/// Per chain: where it stands.
#[derive(Debug)]
struct ChainState {
    worker_id: String,
    /// `seq` of the last event read (0: none yet).
    last_seq: u64,
    /// `seq` of the first event read.
    first_seq: Option<u64>,
    /// Hashes of the last events read, newest last.
    recent: VecDeque<(u64, String)>,
    /// The highest `seq` a checkpoint vouched for, with its spot.
    vouched: Option<(u64, String, Spot)>,
    /// A checkpoint read before any event, vouching for this `seq`.
    anchor: Option<u64>,
    /// Declared unstored: seq → hash.
    unstored: HashMap<u64, String>,
    /// Gaps seen: (first missing, last missing, spot of the event after).
    gaps: Vec<(u64, u64, Spot)>,
    /// The last checkpoint's time and interval, and whether it was final.
    last_checkpoint: Option<(DateTime<Utc>, u64, bool)>,
    /// When the last event was published.
    last_time: Option<DateTime<Utc>>,
    /// Where the last event was read.
    last_position: u64,
}

/// Checks records fed in stream order.
#[derive(Debug)]
pub struct Verifier {
    trusted: HashSet<String>,
    keep_endings: bool,
    chains: HashMap<String, ChainState>,
    /// Jobs received and not yet finished: (chain, tenant, job id) → started.
    open_jobs: HashMap<(String, String, String), bool>,
    newest: Option<DateTime<Utc>>,
    report: Report,
}

impl Verifier {
    /// A verifier trusting the public keys `trusted` (lowercase hex); with `keep_endings`, the
    /// report lists every `finished` event for comparison with stored results.
    pub fn new(trusted: impl IntoIterator<Item = String>, keep_endings: bool) -> Self {
        Self {
            trusted: trusted.into_iter().collect(),
            keep_endings,
            chains: HashMap::new(),
            open_jobs: HashMap::new(),
            newest: None,
            report: Report::default(),
        }
    }

    /// The `finished` events read since the last call (when asked for at [`Verifier::new`]),
    /// to compare with stored results while reading.
    pub fn take_endings(&mut self) -> Vec<Ending> {
        std::mem::take(&mut self.report.endings)
    }

    /// Reads one record, the payload as stored, at `position` in the source.
    pub fn feed(&mut self, position: u64, payload: &[u8]) {
        if let Ok(event) = serde_json::from_slice::<AuditEvent>(payload) {
            self.event(position, payload, event);
        } else if let Ok(checkpoint) = serde_json::from_slice::<AuditCheckpoint>(payload) {
            self.checkpoint(position, checkpoint);
        } else {
            self.report.problems.push(Problem {
                spot: Spot {
                    worker_id: String::new(),
                    chain: String::new(),
                    seq: 0,
                    job_id: None,
                    position,
                },
                what: "unreadable record: neither an audit event nor a checkpoint".into(),
            });
        }
    }

    fn problem(&mut self, spot: Spot, what: impl Into<String>) {
        self.report.problems.push(Problem {
            spot,
            what: what.into(),
        });
    }

    fn state(&mut self, chain: &str, worker_id: &str) -> &mut ChainState {
        self.report
            .chains
            .entry(chain.to_string())
            .or_insert_with(|| worker_id.to_string());
        self.chains
            .entry(chain.to_string())
            .or_insert_with(|| ChainState {
                worker_id: worker_id.to_string(),
                last_seq: 0,
                first_seq: None,
                recent: VecDeque::new(),
                vouched: None,
                anchor: None,
                unstored: HashMap::new(),
                gaps: Vec::new(),
                last_checkpoint: None,
                last_time: None,
                last_position: 0,
            })
    }

    fn event(&mut self, position: u64, payload: &[u8], event: AuditEvent) {
        self.report.events += 1;
        self.newest = self.newest.max(Some(event.timestamp));
        let (Some(chain), Some(seq), Some(prev)) = (&event.chain, event.seq, &event.prev) else {
            let spot = Spot {
                worker_id: event.worker_id.clone(),
                chain: String::new(),
                seq: 0,
                job_id: Some(event.job_id.clone()),
                position,
            };
            self.problem(
                spot,
                "event without chain fields (written by a worker before chains, or forged)",
            );
            return;
        };
        let spot = Spot {
            worker_id: event.worker_id.clone(),
            chain: chain.clone(),
            seq,
            job_id: Some(event.job_id.clone()),
            position,
        };
        if seq == 0 {
            self.problem(spot, "seq 0: chains count from 1");
            return;
        }
        let hash = sha256_hex(payload);
        let state = self.state(chain, &event.worker_id);
        state.last_time = state.last_time.max(Some(event.timestamp));
        state.last_position = position;
        let mut problems = Vec::new();
        if state.worker_id != event.worker_id {
            problems.push(format!(
                "the event names worker {} but its chain is worker {}'s",
                event.worker_id, state.worker_id
            ));
        }
        match state.first_seq {
            None => {
                state.first_seq = Some(seq);
                if seq == 1 && prev != GENESIS_HASH {
                    problems.push(
                        "the first event of the chain does not start from the genesis hash".into(),
                    );
                }
                match state.anchor {
                    // A retained checkpoint before this event vouched for an earlier point:
                    // the events between were removed after it was stored.
                    Some(anchor) if anchor + 1 < seq => {
                        state.gaps.push((anchor + 1, seq - 1, spot.clone()));
                    }
                    Some(anchor) if anchor >= seq => problems.push(format!(
                        "a checkpoint of seq {anchor} is stored before this event: reordered or re-published"
                    )),
                    _ => {}
                }
            }
            Some(_) if seq <= state.last_seq => {
                problems.push(format!(
                    "seq {seq} comes after seq {}: reordered, or an event re-published (changed?)",
                    state.last_seq
                ));
            }
            Some(_) => {
                if seq > state.last_seq + 1 {
                    state.gaps.push((state.last_seq + 1, seq - 1, spot.clone()));
                } else if let Some((_, last)) = state.recent.back()
                    && last != prev
                {
                    problems.push(format!(
                        "prev does not match the hash of seq {}: that event, or this one, was changed",
                        state.last_seq
                    ));
                }
            }
        }
        if seq > state.last_seq {
            state.last_seq = seq;
            state.recent.push_back((seq, hash));
            if state.recent.len() > RECENT_HASHES {
                state.recent.pop_front();
            }
        }
        for what in problems {
            self.problem(spot.clone(), what);
        }
        self.job(spot, &event);
    }

    fn job(&mut self, spot: Spot, event: &AuditEvent) {
        let key = (
            spot.chain.clone(),
            event.tenant.clone(),
            event.job_id.clone(),
        );
        match event.event {
            AuditEventType::Received => {
                self.report.jobs += 1;
                self.open_jobs.insert(key, false);
            }
            AuditEventType::Started => match self.open_jobs.insert(key, true) {
                Some(false) => {}
                Some(true) => self.problem(spot, "a second `started` for the job"),
                None if self.prefix_may_hold(&spot) => {}
                None => self.problem(spot, "`started` without the job's `received` before it"),
            },
            AuditEventType::Finished => {
                if self.open_jobs.remove(&key).is_none() && !self.prefix_may_hold(&spot) {
                    self.problem(
                        spot.clone(),
                        "`finished` without the job's `received` before it",
                    );
                }
                if self.keep_endings {
                    self.report.endings.push(Ending {
                        spot,
                        tenant: event.tenant.clone(),
                        verdict: event.verdict,
                        exit_code: event.usage.as_ref().and_then(|usage| usage.exit_code),
                    });
                }
            }
            // Session events are links of the chain (checked above) and belong to no job;
            // network events belong to a job but end nothing.
            AuditEventType::Rejected
            | AuditEventType::Network
            | AuditEventType::SessionOpened
            | AuditEventType::SessionClosed
            | AuditEventType::SessionExpired => {}
        }
    }

    /// Whether the job's `received` may be in a prefix of the chain that is not in the source.
    fn prefix_may_hold(&self, spot: &Spot) -> bool {
        self.chains
            .get(&spot.chain)
            .and_then(|state| state.first_seq)
            .is_some_and(|first| first > 1)
    }

    fn checkpoint(&mut self, position: u64, checkpoint: AuditCheckpoint) {
        self.report.checkpoints += 1;
        self.newest = self.newest.max(Some(checkpoint.timestamp));
        let spot = Spot {
            worker_id: checkpoint.worker_id.clone(),
            chain: checkpoint.chain.clone(),
            seq: checkpoint.seq,
            job_id: None,
            position,
        };
        if !verify_hex(
            &checkpoint.key,
            &checkpoint.signed_bytes(),
            &checkpoint.signature,
        ) {
            self.problem(
                spot,
                "checkpoint signature does not verify: the checkpoint was changed or forged",
            );
            return;
        }
        if !self.trusted.contains(&checkpoint.key) {
            self.problem(
                spot,
                format!(
                    "checkpoint signed by key {}, which is not among the trusted keys (--key)",
                    checkpoint.key
                ),
            );
            return;
        }
        let state = self.state(&checkpoint.chain, &checkpoint.worker_id);
        for unstored in &checkpoint.unstored {
            state.unstored.insert(unstored.seq, unstored.hash.clone());
        }
        let final_already = state.last_checkpoint.is_some_and(|(_, _, last)| last);
        state.last_checkpoint = Some((
            checkpoint.timestamp,
            checkpoint.interval_ms,
            checkpoint.checkpoint == CheckpointKind::Final,
        ));
        let mut problems = Vec::new();
        if final_already {
            problems.push("a checkpoint after the chain's final one".to_string());
        }
        if state.first_seq.is_none() {
            state.anchor = Some(
                state
                    .anchor
                    .map_or(checkpoint.seq, |a| a.max(checkpoint.seq)),
            );
        } else if checkpoint.seq <= state.last_seq {
            let known = state
                .recent
                .iter()
                .find(|(seq, _)| *seq == checkpoint.seq)
                .map(|(_, hash)| hash.clone())
                .or_else(|| state.unstored.get(&checkpoint.seq).cloned());
            match known {
                Some(hash) if hash == checkpoint.hash => {}
                Some(_) => problems.push(format!(
                    "the signed hash of seq {} does not match the stored event: it was changed",
                    checkpoint.seq
                )),
                None if checkpoint.seq + (RECENT_HASHES as u64) < state.last_seq => {
                    problems.push(format!(
                        "checkpoint of seq {} stored long after it: reordered or re-published",
                        checkpoint.seq
                    ))
                }
                None => {}
            }
        }
        if state
            .vouched
            .as_ref()
            .is_none_or(|(seq, _, _)| checkpoint.seq >= *seq)
        {
            state.vouched = Some((checkpoint.seq, checkpoint.hash.clone(), spot.clone()));
        }
        for what in problems {
            self.problem(spot.clone(), what);
        }
    }

    /// Ends the pass: gaps not declared unstored, tails not reaching what was vouched for,
    /// chains that stopped checkpointing without a final checkpoint. `now` is when the source
    /// was read (a live stream), or `None` for an export, judged by its newest record.
    pub fn finish(mut self, now: Option<DateTime<Utc>>) -> Report {
        let judged_at = now.or(self.newest);
        // Found as they were read; what only the end shows goes before them in order.
        let during = std::mem::take(&mut self.report.problems);
        let mut chains: Vec<(String, ChainState)> = self.chains.drain().collect();
        chains.sort_by_key(|(_, state)| state.first_seq);
        for (chain, state) in chains {
            let spot_at = |seq: u64| Spot {
                worker_id: state.worker_id.clone(),
                chain: chain.clone(),
                seq,
                job_id: None,
                position: state.last_position,
            };
            for (from, to, spot) in &state.gaps {
                let declared = (*from..=*to).all(|seq| state.unstored.contains_key(&seq));
                if declared {
                    self.report.unstored += to - from + 1;
                } else {
                    self.report.problems.push(Problem {
                        spot: spot.clone(),
                        what: format!("events {from} to {to} of the chain are missing (deleted?)"),
                    });
                }
            }
            if let Some(first) = state.first_seq
                && first > 1
                && state.anchor.is_none_or(|anchor| anchor + 1 == first)
            {
                self.report.cut.push(Cut {
                    worker_id: state.worker_id.clone(),
                    chain: chain.clone(),
                    first_seq: first,
                });
            }
            if let Some((vouched, _, spot)) = &state.vouched
                && *vouched > state.last_seq
                && !(state.last_seq + 1..=*vouched).all(|seq| state.unstored.contains_key(&seq))
                && !(state.first_seq.is_none() && state.anchor.is_some())
            {
                self.report.problems.push(Problem {
                    spot: spot.clone(),
                    what: format!(
                        "a signed checkpoint vouches for events up to seq {vouched}, but the chain ends at seq {}: its tail was removed",
                        state.last_seq
                    ),
                });
            }
            match state.last_checkpoint {
                Some((_, _, true)) => {}
                Some((at, interval_ms, false)) => {
                    let due = at + chrono::Duration::milliseconds(2 * interval_ms as i64 + 5_000);
                    if judged_at.is_some_and(|judged| judged > due) {
                        self.report.problems.push(Problem {
                            spot: spot_at(state.last_seq),
                            what: format!(
                                "the chain's checkpoints stop at {at} without a final one: its worker died, or its tail was removed"
                            ),
                        });
                    } else {
                        self.report.open.push(chain.clone());
                    }
                }
                // A worker that started moments ago has not checkpointed yet.
                None if state
                    .last_time
                    .zip(judged_at)
                    .is_some_and(|(last, judged)| judged - last < chrono::Duration::minutes(5)) =>
                {
                    self.report.open.push(chain.clone());
                }
                None => self.report.problems.push(Problem {
                    spot: spot_at(state.last_seq),
                    what: "no signed checkpoint of this chain: nothing vouches for its events"
                        .into(),
                }),
            }
        }
        // The first broken link is the earliest record: a gap before what it causes.
        let mut problems = std::mem::take(&mut self.report.problems);
        problems.extend(during);
        problems.sort_by_key(|problem| problem.spot.position);
        self.report.problems = problems;
        self.report
    }
}

#[cfg(test)]
mod tests;
