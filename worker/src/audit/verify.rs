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

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use openshell_protocol::audit::{CheckpointKind, GENESIS_HASH};
use openshell_protocol::{AuditCheckpoint, AuditEvent, AuditEventType, Verdict};

use super::chain::sha256_hex;
use super::key::verify_hex;

/// How many recent event hashes are kept per chain to check the checkpoints that name them.
pub const RECENT_HASHES: usize = 4096;

/// Where a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spot {
    /// The worker.
    pub worker_id: String,
    /// The chain.
    pub chain: String,
    /// The sequence number in the chain.
    pub seq: u64,
    /// The job, when the record is an event.
    pub job_id: Option<String>,
    /// Position of the record in the source (stream sequence, or line number).
    pub position: u64,
}

impl std::fmt::Display for Spot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "worker {}, chain {}, seq {}",
            self.worker_id, self.chain, self.seq
        )?;
        if let Some(job) = &self.job_id {
            write!(f, ", job {job}")?;
        }
        write!(f, " (record {})", self.position)
    }
}

/// One broken link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where.
    pub spot: Spot,
    /// What is wrong.
    pub what: String,
}

/// A chain's prefix that is not there, and why that is not tampering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The worker.
    pub worker_id: String,
    /// The chain.
    pub chain: String,
    /// The first `seq` present.
    pub first_seq: u64,
}

/// A job's end as audited, to compare with its stored result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// Where the `finished` event is.
    pub spot: Spot,
    /// Tenant.
    pub tenant: String,
    /// Verdict.
    pub verdict: Option<Verdict>,
    /// Exit code.
    pub exit_code: Option<i32>,
}

/// What a verification found.
#[derive(Debug, Default)]
pub struct Report {
    /// Events read.
    pub events: u64,
    /// Checkpoints read.
    pub checkpoints: u64,
    /// Chains, by id, with their worker.
    pub chains: BTreeMap<String, String>,
    /// Jobs with a `received` event.
    pub jobs: u64,
    /// Broken links, in the order found.
    pub problems: Vec<Problem>,
    /// Chain prefixes removed by retention.
    pub cut: Vec<Cut>,
    /// Events the workers declared unstored (an audit stream outage), by chain and seq.
    pub unstored: u64,
    /// Chains still open (no final checkpoint, last checkpoint recent): workers running.
    pub open: Vec<String>,
    /// `finished` events not yet taken ([`Verifier::take_endings`]), when asked for.
    pub endings: Vec<Ending>,
}

impl Report {
    /// True when nothing is broken.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

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
            AuditEventType::Rejected => {}
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
mod tests {
    use openshell_protocol::audit::{AuditContext, UnstoredEvent};
    use openshell_protocol::{ExecRequest, Limits, PROTOCOL_VERSION};

    use super::*;
    use crate::audit::{AuditKey, Chain};

    /// A worker's trail: `jobs` jobs of three events, with a checkpoint after every
    /// `every` events and a final one, as stored.
    async fn trail(key: &AuditKey, jobs: usize, every: u64) -> Vec<Vec<u8>> {
        let chain = Chain::new("w1");
        let context = AuditContext {
            tenant: "acme".into(),
            pool: "none".into(),
            backend: "none".into(),
            worker_id: "w1".into(),
            traceparent: None,
        };
        let mut records = Vec::new();
        for job in 0..jobs {
            let request = ExecRequest::command(format!("j{job}"), vec!["true".into()]);
            for kind in [
                AuditEventType::Received,
                AuditEventType::Started,
                AuditEventType::Finished,
            ] {
                let event =
                    AuditEvent::for_request(kind, &request, 10, &Limits::default(), &context);
                let mut link = chain.link().await;
                let sealed = link.seal(&event).unwrap();
                link.commit(sealed.seq, &sealed.hash);
                records.push(sealed.payload);
                if sealed.seq % every == 0 {
                    records.push(checkpoint(
                        key,
                        &chain,
                        sealed.seq,
                        &sealed.hash,
                        false,
                        vec![],
                    ));
                }
            }
        }
        let last: AuditEvent = serde_json::from_slice(
            records
                .iter()
                .rev()
                .find(|r| serde_json::from_slice::<AuditEvent>(r).is_ok())
                .unwrap(),
        )
        .unwrap();
        let hash = sha256_hex(
            records
                .iter()
                .rev()
                .find(|r| serde_json::from_slice::<AuditEvent>(r).is_ok())
                .unwrap(),
        );
        records.push(checkpoint(
            key,
            &chain,
            last.seq.unwrap(),
            &hash,
            true,
            vec![],
        ));
        records
    }

    fn checkpoint(
        key: &AuditKey,
        chain: &Chain,
        seq: u64,
        hash: &str,
        last: bool,
        unstored: Vec<UnstoredEvent>,
    ) -> Vec<u8> {
        let mut checkpoint = AuditCheckpoint {
            version: PROTOCOL_VERSION,
            checkpoint: if last {
                CheckpointKind::Final
            } else {
                CheckpointKind::Interval
            },
            worker_id: chain.worker_id().into(),
            chain: chain.id().into(),
            chain_started: chain.started(),
            timestamp: Utc::now(),
            seq,
            hash: hash.into(),
            interval_ms: 60_000,
            unstored,
            key: key.public_hex(),
            signature: String::new(),
        };
        checkpoint.signature = key.sign_hex(&checkpoint.signed_bytes());
        serde_json::to_vec(&checkpoint).unwrap()
    }

    fn verify(key: &AuditKey, records: &[Vec<u8>]) -> Report {
        let mut verifier = Verifier::new([key.public_hex()], false);
        for (index, record) in records.iter().enumerate() {
            verifier.feed(index as u64 + 1, record);
        }
        verifier.finish(None)
    }

    fn is_event(record: &[u8]) -> bool {
        serde_json::from_slice::<AuditEvent>(record).is_ok()
    }

    #[tokio::test]
    async fn a_whole_trail_verifies() {
        let key = AuditKey::ephemeral();
        let report = verify(&key, &trail(&key, 10, 7).await);
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!((report.events, report.jobs), (30, 10));
        assert!(report.cut.is_empty());
    }

    #[tokio::test]
    async fn a_front_cut_is_retention_but_a_gap_after_a_retained_checkpoint_is_not() {
        let key = AuditKey::ephemeral();
        let records = trail(&key, 10, 7).await;
        // Retention: the oldest records go, up to (not including) the checkpoint of seq 7.
        let checkpoint_7 = records.iter().position(|r| !is_event(r)).unwrap();
        let report = verify(&key, &records[checkpoint_7..]);
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.cut.len(), 1);
        assert_eq!(report.cut[0].first_seq, 8);
        // The checkpoint of seq 7 kept, events 8 and 9 removed after it: tampering.
        let mut tampered = records[checkpoint_7..].to_vec();
        tampered.drain(1..3);
        let report = verify(&key, &tampered);
        assert!(
            report.problems[0].what.contains("events 8 to 9"),
            "{:?}",
            report.problems
        );
    }

    #[tokio::test]
    async fn gaps_declared_unstored_by_a_signed_checkpoint_are_outages_not_tampering() {
        let key = AuditKey::ephemeral();
        let mut records = trail(&key, 3, 100).await;
        // Event seq 5 (a `started`, acknowledged by the stream when it works) removed, then
        // declared unstored in the final checkpoint.
        let fifth = records
            .iter()
            .position(|r| serde_json::from_slice::<AuditEvent>(r).is_ok_and(|e| e.seq == Some(5)))
            .unwrap();
        let removed = records.remove(fifth);
        let final_record: AuditCheckpoint =
            serde_json::from_slice(records.last().unwrap()).unwrap();
        let report = verify(&key, &records);
        assert!(
            report.problems[0].what.contains("events 5 to 5"),
            "{:?}",
            report.problems
        );
        let mut declared = final_record.clone();
        declared.unstored = vec![UnstoredEvent {
            seq: 5,
            hash: sha256_hex(&removed),
        }];
        declared.signature = key.sign_hex(&declared.signed_bytes());
        *records.last_mut().unwrap() = serde_json::to_vec(&declared).unwrap();
        let report = verify(&key, &records);
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.unstored, 1);
    }

    #[tokio::test]
    async fn a_chain_whose_checkpoints_stop_without_a_final_one_is_named_once_overdue() {
        let key = AuditKey::ephemeral();
        let mut records = trail(&key, 3, 3).await;
        records.pop(); // the final checkpoint
        let judge = |at: DateTime<Utc>| {
            let mut verifier = Verifier::new([key.public_hex()], false);
            for (index, record) in records.iter().enumerate() {
                verifier.feed(index as u64 + 1, record);
            }
            verifier.finish(Some(at))
        };
        let now = judge(Utc::now());
        assert!(now.is_clean(), "{:?}", now.problems);
        assert_eq!(now.open.len(), 1, "a running worker's chain is open");
        let later = judge(Utc::now() + chrono::Duration::minutes(3));
        assert!(
            later.problems[0].what.contains("without a final one"),
            "{:?}",
            later.problems
        );
    }

    #[tokio::test]
    async fn a_changed_checkpoint_or_an_untrusted_key_is_refused() {
        let key = AuditKey::ephemeral();
        let mut records = trail(&key, 2, 100).await;
        let mut last: AuditCheckpoint = serde_json::from_slice(records.last().unwrap()).unwrap();
        last.seq -= 1;
        *records.last_mut().unwrap() = serde_json::to_vec(&last).unwrap();
        let report = verify(&key, &records);
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.what.contains("signature does not verify"))
        );
        let report = verify(&AuditKey::ephemeral(), &trail(&key, 2, 100).await);
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.what.contains("not among the trusted keys"))
        );
    }
}
