//! `openshell audit verify` on a real trail: 200 durable jobs across two workers (each with
//! its own signing key) verify clean, from the stream and offline from an export after the
//! stream is gone, and with the oldest messages purged (retention: a warning); deleting one
//! stored event, re-publishing one changed, dropping a worker's tail, or replacing a stored
//! result each make it fail, naming the worker, chain, sequence and job. The same trail
//! exported as OCSF validates against the vendored OCSF schemas.

// Integration tests are test code: lets clippy.toml's allow-unwrap-in-tests see it.
#![cfg(test)]

mod durable;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use bytes::Bytes;
use openshell_protocol::{AuditCheckpoint, AuditEvent, AuditEventType, ExecRequest, Verdict};
use openshell_test_support::Openshell;
use openshell_test_support::nats::NatsServer;
use openshell_worker::durable::streams::AUDIT;

const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));
const JOBS: usize = 200;

/// A fresh Ed25519 key pair made by openssl: (private PEM, public PEM).
fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .status()
            .expect("openssl runs (apt-get install openssl)");
        assert!(status.success(), "openssl {args:?}");
    };
    run(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        private.to_str().unwrap(),
    ]);
    run(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    (private, public)
}

/// Runs `openshell audit ARGS` against `nats` (when given) and returns its output.
async fn audit(nats: Option<&NatsServer>, args: &[&str]) -> Output {
    let url = nats.map(NatsServer::url);
    let mut envs = Vec::new();
    if let Some(url) = &url {
        envs.push(("NATS_URL", url.as_str()));
    }
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    OPENSHELL.cli(all, &envs).await
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every stored message: (stream sequence, payload).
async fn stored(nats: &async_nats::Client) -> Vec<(u64, Bytes)> {
    let jetstream = async_nats::jetstream::new(nats.clone());
    let mut stream = jetstream.get_stream(AUDIT).await.expect("audit stream");
    let state = stream.info().await.expect("info").state.clone();
    let mut messages = Vec::new();
    for sequence in state.first_sequence..=state.last_sequence {
        if let Ok(message) = stream.get_raw_message(sequence).await {
            messages.push((sequence, message.payload));
        }
    }
    messages
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trail_of_two_workers_verifies_and_every_tampering_is_named() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (key1, pub1) = keypair(dir.path(), "w1");
    let (key2, pub2) = keypair(dir.path(), "w2");
    let (key1, key2) = (key1.to_str().unwrap(), key2.to_str().unwrap());
    let (pub1, pub2) = (
        pub1.to_str().unwrap().to_string(),
        pub2.to_str().unwrap().to_string(),
    );
    let interval = ("OPENSHELL_AUDIT_CHECKPOINT_INTERVAL", "1s");
    let mut w1 = durable::worker(&nats, "w1", &[("OPENSHELL_AUDIT_KEY", key1), interval]).await;
    let mut w2 = durable::worker(&nats, "w2", &[("OPENSHELL_AUDIT_KEY", key2), interval]).await;
    let (connection, client) = durable::client(&nats).await;
    let ids: Vec<String> = (0..JOBS).map(|n| format!("job-{n}")).collect();
    for id in &ids {
        let request = ExecRequest::command(id, vec!["echo".into(), id.clone()]);
        client
            .submit("none", "acme", &request, None)
            .await
            .expect("submit");
    }
    let results = durable::await_results(&client, "acme", &ids, Duration::from_secs(120)).await;
    assert!(
        results
            .values()
            .all(|result| result.status == Verdict::Completed)
    );
    let ran_on = |worker: &str| results.values().filter(|r| r.worker_id == worker).count();
    assert!(
        ran_on("w1") > 0 && ran_on("w2") > 0,
        "both workers ran jobs"
    );
    w1.terminate().await;
    w2.terminate().await;

    let keys = ["--key", pub1.as_str(), "--key", pub2.as_str()];
    let output = audit(Some(&nats), &[&["verify"], &keys[..]].concat()).await;
    assert!(
        output.status.success(),
        "{}\n{}\n{}",
        text(&output),
        w1.logs(),
        w2.logs()
    );
    let report = text(&output);
    eprintln!("clean trail:\n{report}");
    assert!(
        report.contains(&format!("2 chains, {JOBS} jobs")),
        "{report}"
    );
    assert!(
        report.contains(&format!("results: {JOBS} jobs compared")),
        "{report}"
    );

    // Only one key trusted: the other worker's checkpoints are refused.
    let output = audit(Some(&nats), &["verify", "--key", &pub1]).await;
    assert!(!output.status.success());
    assert!(
        text(&output).contains("not among the trusted keys"),
        "{}",
        text(&output)
    );

    let export = dir.path().join("audit.jsonl");
    let output = audit(Some(&nats), &["export", "--out", export.to_str().unwrap()]).await;
    assert!(output.status.success(), "{}", text(&output));
    ocsf_export_validates(&nats, dir.path()).await;

    // Tampering, one kind after the other, each named.
    let jetstream = async_nats::jetstream::new(connection.clone());
    let stream = jetstream.get_stream(AUDIT).await.expect("audit stream");
    let messages = stored(&connection).await;
    let events: Vec<(u64, AuditEvent)> = messages
        .iter()
        .filter_map(|(seq, payload)| Some((*seq, serde_json::from_slice(payload).ok()?)))
        .collect();
    let of = |worker: &str| -> Vec<&(u64, AuditEvent)> {
        events
            .iter()
            .filter(|(_, e)| e.worker_id == worker)
            .collect()
    };
    let (w1_events, w2_events) = (of("w1"), of("w2"));

    // Retention removes the oldest messages: a warning, not a failure.
    stream
        .purge()
        .sequence(41)
        .await
        .expect("purge the first 40 messages");
    let output = audit(Some(&nats), &[&["verify"], &keys[..]].concat()).await;
    let report = text(&output);
    eprintln!("the oldest 40 messages removed:\n{report}");
    assert!(output.status.success(), "{report}");
    assert!(report.contains("removed by retention"), "{report}");

    // 1. One stored event of w1 deleted.
    let (deleted_at, deleted) = w1_events[w1_events.len() / 2];
    stream.delete_message(*deleted_at).await.expect("delete");
    let seq = deleted.seq.unwrap();
    let output = audit(Some(&nats), &[&["verify"], &keys[..]].concat()).await;
    let report = text(&output);
    eprintln!("one event deleted:\n{report}");
    assert!(!output.status.success(), "{report}");
    let chain1 = deleted.chain.clone().unwrap();
    assert!(
        report.contains(&format!(
            "BROKEN at worker w1, chain {chain1}, seq {}",
            seq + 1
        )) && report.contains(&format!("events {seq} to {seq} of the chain are missing")),
        "{report}"
    );

    // 2. One event of w2 changed: deleted, and published again with other code.
    let (edited_at, edited) = w2_events[w2_events.len() / 3];
    let original = &messages.iter().find(|(seq, _)| seq == edited_at).unwrap().1;
    let mut changed: serde_json::Value = serde_json::from_slice(original).unwrap();
    changed["command"] = serde_json::json!(["rm", "-rf", "/"]);
    stream.delete_message(*edited_at).await.expect("delete");
    jetstream
        .publish(
            format!("openshell.audit.acme.none.{}", edited.event),
            Bytes::from(serde_json::to_vec(&changed).unwrap()),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    let output = audit(Some(&nats), &[&["verify"], &keys[..]].concat()).await;
    let report = text(&output);
    eprintln!("one event changed:\n{report}");
    let chain2 = edited.chain.clone().unwrap();
    let edited_seq = edited.seq.unwrap();
    assert!(!output.status.success());
    assert!(
        report.contains(&format!(
            "worker w2, chain {chain2}, seq {edited_seq}, job {}",
            edited.job_id
        )) && report.contains("re-published"),
        "{report}"
    );

    // 3. w1's last three events dropped: the final checkpoint vouches for more.
    for (at, _) in &w1_events[w1_events.len() - 3..] {
        stream.delete_message(*at).await.expect("delete");
    }
    let output = audit(Some(&nats), &[&["verify"], &keys[..]].concat()).await;
    let report = text(&output);
    eprintln!("a tail dropped:\n{report}");
    let last = w1_events.last().unwrap().1.seq.unwrap();
    assert!(
        report.contains(&format!(
            "vouches for events up to seq {last}, but the chain ends at seq {}",
            last - 3
        )),
        "{report}"
    );

    // 4. A stored result replaced by one its worker never audited: a job whose whole trail is
    // still there (not purged above, not the deleted, edited or dropped events'), found by
    // its `finished` event in w1's middle stretch.
    let spoiled = [deleted.job_id.as_str(), edited.job_id.as_str()];
    let forged_id = w1_events[w1_events.len() / 2 + 1..w1_events.len() - 3]
        .iter()
        .map(|(_, event)| event)
        .find(|event| {
            event.event == AuditEventType::Finished
                && !spoiled.contains(&event.job_id.as_str())
                && w1_events
                    .iter()
                    .filter(|(_, other)| other.job_id == event.job_id)
                    .count()
                    == 3
        })
        .map(|event| event.job_id.clone())
        .expect("a job of w1 whose three events are all there");
    let forged_id = forged_id.as_str();
    let results = jetstream
        .get_stream("OPENSHELL_RESULTS")
        .await
        .expect("results stream");
    let subject = format!("openshell.results.acme.{forged_id}");
    let stored_result = results
        .get_last_raw_message_by_subject(&subject)
        .await
        .expect("stored result");
    let mut forged: serde_json::Value = serde_json::from_slice(&stored_result.payload).unwrap();
    forged["status"] = serde_json::json!("timeout");
    results
        .delete_message(stored_result.sequence)
        .await
        .expect("delete the result");
    jetstream
        .publish(subject, Bytes::from(serde_json::to_vec(&forged).unwrap()))
        .await
        .expect("publish")
        .await
        .expect("stored");
    let output = audit(Some(&nats), &[&["verify"], &keys[..]].concat()).await;
    let report = text(&output);
    assert!(
        report.contains(&format!("job {forged_id} (record"))
            && report.contains("the stored result says timeout (exit code Some(0)) but the worker audited completed"),
        "{report}"
    );

    // The export taken before the tampering verifies offline, with the stream gone.
    jetstream
        .delete_stream(AUDIT)
        .await
        .expect("delete the stream");
    let file = export.to_str().unwrap();
    let output = audit(None, &[&["verify", "--file", file], &keys[..]].concat()).await;
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains(&format!("2 chains, {JOBS} jobs")),
        "{}",
        text(&output)
    );
    let lines = std::fs::read_to_string(&export).unwrap();
    let checkpoints = lines
        .lines()
        .filter(|line| serde_json::from_str::<AuditCheckpoint>(line).is_ok())
        .count();
    assert!(checkpoints >= 2, "a final checkpoint per worker");
}

/// `audit export --format ocsf`: every event an OCSF event that validates against the vendored
/// JSON Schema of its class (worker/tests/ocsf/), every audit event exported.
async fn ocsf_export_validates(nats: &NatsServer, dir: &Path) {
    let out = dir.join("ocsf.jsonl");
    let output = audit(
        Some(nats),
        &["export", "--format", "ocsf", "--out", out.to_str().unwrap()],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output));
    let schema = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/ocsf")
            .join(name);
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|error| panic!("{name} does not compile: {error}"))
    };
    let api = schema("api_activity.1.8.0.json");
    let process = schema("process_activity.1.8.0.json");
    let mut classes = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let class = event["class_uid"].as_u64().unwrap();
        let validator = match class {
            6003 => &api,
            1007 => &process,
            other => panic!("unexpected OCSF class {other}: {line}"),
        };
        let errors: Vec<String> = validator
            .iter_errors(&event)
            .map(|error| format!("  at `{}`: {error}", error.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{line}\ndoes not match OCSF class {class}:\n{}",
            errors.join("\n")
        );
        *classes.entry(class).or_insert(0) += 1;
        // The schema has teeth: without its required metadata, or with a field OCSF does not
        // define, the same event is refused.
        let mut broken = event.clone();
        broken.as_object_mut().unwrap().remove("metadata");
        assert!(!validator.is_valid(&broken));
        let mut broken = event.clone();
        broken["openshell_job"] = serde_json::json!("x");
        assert!(!validator.is_valid(&broken));
    }
    // received per job (API Activity); started and finished (Process Activity).
    assert_eq!(classes.get(&6003), Some(&JOBS), "{classes:?}");
    assert_eq!(classes.get(&1007), Some(&(2 * JOBS)), "{classes:?}");
}
