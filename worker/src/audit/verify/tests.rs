//! The verifier on synthetic trails: built with a real [`Chain`] and [`AuditKey`].

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
    let mut last = (0, String::new());
    for job in 0..jobs {
        let request = ExecRequest::command(format!("j{job}"), vec!["true".into()]);
        for kind in [
            AuditEventType::Received,
            AuditEventType::Started,
            AuditEventType::Finished,
        ] {
            let event = AuditEvent::for_request(kind, &request, 10, &Limits::default(), &context);
            let mut link = chain.link().await;
            let sealed = link.seal(&event).unwrap();
            link.commit(sealed.seq, &sealed.hash);
            last = (sealed.seq, sealed.hash.clone());
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
    records.push(checkpoint(key, &chain, last.0, &last.1, true, vec![]));
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
    let final_record: AuditCheckpoint = serde_json::from_slice(records.last().unwrap()).unwrap();
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
