//! The whole path through real processes: a nats-server, an `openshell worker` on the local
//! backend, and clients (the typed client, raw NATS, the CLI).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use openshell_protocol::{
    AuditEvent, AuditEventType, Client, ErrorKind, ExecRequest, ExecResult, Limits, Verdict,
};
use openshell_test_support::nats::NatsServer;
use openshell_test_support::{Openshell, WorkerProcess};

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

/// A nats-server plus one worker on the `none` backend; None when nats-server is missing
/// outside CI.
async fn stack(extra: &[(&str, &str)]) -> Option<(NatsServer, WorkerProcess, Client)> {
    let nats = NatsServer::start().await?;
    let url = nats.url();
    let mut envs = vec![
        ("NATS_URL", url.as_str()),
        ("SANDBOX_BACKEND", "none"),
        ("LOG_LEVEL", "info"),
    ];
    envs.extend_from_slice(extra);
    let worker = OPENSHELL.worker(&envs).await;
    let client = Client::connect(&url).await.expect("client connects");
    Some((nats, worker, client))
}

fn python(id: &str, code: &str) -> ExecRequest {
    ExecRequest::code(id, "python", code)
}

/// `exec --live` prints the output as the job writes it, each byte once, and exits with the
/// job's code; stderr stays on stderr.
#[tokio::test(flavor = "multi_thread")]
async fn cli_exec_live_prints_the_output_once() {
    let Some((nats, _worker, _client)) = stack(&[]).await else {
        return;
    };
    let url = nats.url();
    let output = OPENSHELL
        .cli(
            [
                "exec",
                "--live",
                "--lang",
                "bash",
                "-c",
                "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three; exit 3",
            ],
            &[("NATS_URL", url.as_str()), ("SANDBOX_BACKEND", "none")],
        )
        .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "one\nthree\n",
        "stderr: {stderr}"
    );
    assert_eq!(stderr.matches("two").count(), 1, "{stderr}");
    assert_eq!(output.status.code(), Some(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_exec_prints_42() {
    let Some((nats, _worker, _client)) = stack(&[]).await else {
        return;
    };
    let url = nats.url();
    let output = OPENSHELL
        .cli(
            ["exec", "--lang", "python", "-c", "print(6*7)"],
            &[("NATS_URL", url.as_str()), ("SANDBOX_BACKEND", "none")],
        )
        .await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "42\n",
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0));

    let output = OPENSHELL
        .cli(
            [
                "exec",
                "--command",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
            &[("NATS_URL", url.as_str()), ("SANDBOX_BACKEND", "none")],
        )
        .await;
    assert_eq!(String::from_utf8_lossy(&output.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "err\n");
    assert_eq!(output.status.code(), Some(3));

    let output = OPENSHELL
        .cli(
            ["exec", "--timeout", "300ms", "--command", "sleep", "5"],
            &[("NATS_URL", url.as_str()), ("SANDBOX_BACKEND", "none")],
        )
        .await;
    assert_eq!(
        output.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("Sandbox timeout exceeded"));
}

#[tokio::test(flavor = "multi_thread")]
async fn results_carry_the_enforcement_report_and_audit_comes_first() {
    let Some((_nats, _worker, client)) = stack(&[]).await else {
        return;
    };
    let mut audit = client.nats().subscribe("openshell.audit.>").await.unwrap();
    client.nats().flush().await.unwrap();
    let result = client
        .exec("none", "acme", &python("audited-1", "print('hi')"))
        .await
        .unwrap();
    assert_eq!(result.status, Verdict::Completed, "{result:?}");
    assert_eq!(result.stdout.to_text_lossy(), "hi\n");
    assert_eq!(
        (
            result.tenant.as_str(),
            result.pool.as_str(),
            result.backend.as_str()
        ),
        ("acme", "none", "none")
    );
    assert!(result.limits.timeout.is_some() && result.limits.memory.is_some());
    for (name, _) in result.limits.iter() {
        assert!(
            result.enforcement.contains_key(&name),
            "no enforcement entry for {name}: {result:?}"
        );
    }
    let mut events = Vec::new();
    while events.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(5), audit.next())
            .await
            .unwrap()
            .unwrap();
        let event: AuditEvent = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(
            message.subject.as_str(),
            format!("openshell.audit.acme.none.{}", event.event)
        );
        events.push(event);
    }
    let types: Vec<_> = events.iter().map(|event| event.event).collect();
    assert_eq!(
        types,
        [
            AuditEventType::Received,
            AuditEventType::Started,
            AuditEventType::Finished
        ]
    );
    assert_eq!(events[0].code.as_deref(), Some("print('hi')"));
    assert_eq!(
        events[0].sha256,
        openshell_protocol::request::sha256_hex(b"print('hi')")
    );
    assert_eq!(events[2].verdict, Some(Verdict::Completed));
    assert_eq!(events[2].usage.as_ref().unwrap().exit_code, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_typed_errors_and_audit_events() {
    let Some((_nats, worker, client)) = stack(&[("OPENSHELL_MAX_REQUEST_BYTES", "64k")]).await
    else {
        return;
    };
    let nats = client.nats().clone();
    let mut audit = nats
        .subscribe("openshell.audit.*.none.rejected")
        .await
        .unwrap();
    nats.flush().await.unwrap();
    let huge = format!(
        r#"{{"id":"big","language":"python","code":"{}"}}"#,
        "x".repeat(100_000)
    );
    let cases: Vec<(&str, Vec<u8>, ErrorKind)> = vec![
        ("not json", b"print(1)".to_vec(), ErrorKind::InvalidRequest),
        ("empty", b"".to_vec(), ErrorKind::InvalidRequest),
        (
            "truncated",
            br#"{"id":"t1","language":"py"#.to_vec(),
            ErrorKind::InvalidRequest,
        ),
        ("array", b"[1,2]".to_vec(), ErrorKind::InvalidRequest),
        (
            "missing id",
            br#"{"language":"python","code":"1"}"#.to_vec(),
            ErrorKind::InvalidRequest,
        ),
        (
            "id wrong type",
            br#"{"id":5,"language":"python","code":"1"}"#.to_vec(),
            ErrorKind::InvalidRequest,
        ),
        (
            "id with dot",
            br#"{"id":"a.b","language":"python","code":"1"}"#.to_vec(),
            ErrorKind::InvalidRequest,
        ),
        (
            "unknown field",
            br#"{"id":"u1","language":"python","code":"1","sudo":true}"#.to_vec(),
            ErrorKind::InvalidRequest,
        ),
        (
            "unknown limit",
            br#"{"id":"u2","language":"python","code":"1","limits":{"gpus":1}}"#.to_vec(),
            ErrorKind::InvalidRequest,
        ),
        (
            "bad size",
            br#"{"id":"u3","language":"python","code":"1","limits":{"memory":"lots"}}"#.to_vec(),
            ErrorKind::InvalidRequest,
        ),
        (
            "code and command",
            br#"{"id":"u4","language":"python","code":"1","command":["ls"]}"#.to_vec(),
            ErrorKind::InvalidRequest,
        ),
        (
            "path escape",
            br#"{"id":"u5","command":["ls"],"files":[{"path":"../x","content":""}]}"#.to_vec(),
            ErrorKind::InvalidRequest,
        ),
        (
            "version 9",
            br#"{"version":9,"id":"u6","command":["ls"]}"#.to_vec(),
            ErrorKind::UnsupportedVersion,
        ),
        ("huge", huge.into_bytes(), ErrorKind::PayloadTooLarge),
        (
            "bad base64",
            br#"{"id":"u7","command":["cat"],"stdin":{"base64":"%%"}}"#.to_vec(),
            ErrorKind::InvalidRequest,
        ),
        (
            "invalid utf-8",
            b"{\"id\":\"u8\",\"command\":[\"\xff\"]}".to_vec(),
            ErrorKind::InvalidRequest,
        ),
        (
            "over ceiling",
            br#"{"id":"u9","command":["true"],"limits":{"memory":"64g"}}"#.to_vec(),
            ErrorKind::LimitExceedsPolicy,
        ),
        (
            "unknown language",
            br#"{"id":"u11","language":"cobol","code":"x"}"#.to_vec(),
            ErrorKind::LanguageNotAllowed,
        ),
        (
            "network",
            br#"{"id":"u12","command":["true"],"network":true}"#.to_vec(),
            ErrorKind::NetworkNotAllowed,
        ),
        (
            "deep nesting",
            format!("{}{}", "[".repeat(30_000), "]".repeat(30_000)).into_bytes(),
            ErrorKind::InvalidRequest,
        ),
    ];
    for (name, payload, kind) in &cases {
        let reply = nats
            .request("openshell.exec.none.default", Bytes::from(payload.clone()))
            .await
            .unwrap_or_else(|error| panic!("{name}: no reply: {error}"));
        let result: ExecResult = serde_json::from_slice(&reply.payload)
            .unwrap_or_else(|error| panic!("{name}: reply is not a result: {error}"));
        assert_eq!(result.status, Verdict::Rejected, "{name}: {result:?}");
        let error = result.error.unwrap_or_else(|| panic!("{name}: no error"));
        let expected = *kind;
        assert_eq!(error.kind, expected, "{name}: {}", error.message);
        assert!(!error.message.is_empty());
        let event = tokio::time::timeout(Duration::from_secs(5), audit.next())
            .await
            .unwrap()
            .unwrap();
        let event: AuditEvent = serde_json::from_slice(&event.payload).unwrap();
        assert_eq!(event.event, AuditEventType::Rejected, "{name}");
        assert_eq!(
            event.error.map(|error| error.kind),
            Some(expected),
            "{name}"
        );
    }
    let result = client
        .exec(
            "none",
            "default",
            &python("after-garbage", "print('still here')"),
        )
        .await
        .unwrap();
    assert_eq!(result.stdout.to_text_lossy(), "still here\n");
    assert!(!worker.logs().contains("panicked"), "{}", worker.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_concurrent_jobs_get_exactly_one_result_each() {
    let Some((_nats, _worker, client)) = stack(&[]).await else {
        return;
    };
    let nats = client.nats().clone();
    let mut inbox = nats.subscribe("_INBOX.default.replies.>").await.unwrap();
    for index in 0..100 {
        let request = ExecRequest::command(
            format!("job-{index}"),
            vec!["sh".into(), "-c".into(), format!("echo {index}")],
        );
        let payload = Bytes::from(serde_json::to_vec(&request).unwrap());
        nats.publish_with_reply(
            "openshell.exec.none.default",
            format!("_INBOX.default.replies.{index}"),
            payload,
        )
        .await
        .unwrap();
    }
    nats.flush().await.unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    loop {
        let wait = if seen.len() < 100 {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(1)
        };
        let Ok(Some(message)) = tokio::time::timeout(wait, inbox.next()).await else {
            break;
        };
        let result: ExecResult = serde_json::from_slice(&message.payload).unwrap();
        let index = message
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(result.id, format!("job-{index}"));
        assert_eq!(result.status, Verdict::Completed, "{result:?}");
        assert_eq!(result.stdout.to_text_lossy().trim(), index);
        *seen.entry(result.id).or_default() += 1;
    }
    assert_eq!(seen.len(), 100, "missing results");
    assert!(
        seen.values().all(|&count| count == 1),
        "duplicate results: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_jobs_end_with_the_right_verdict_and_the_worker_keeps_serving() {
    let Some((_nats, worker, client)) = stack(&[]).await else {
        return;
    };
    let limits = |timeout: &str, memory: &str, output: &str| Limits {
        timeout: Some(timeout.parse().unwrap()),
        memory: Some(memory.parse().unwrap()),
        output: Some(output.parse().unwrap()),
        processes: Some(64),
        ..Limits::default()
    };
    let cases = [
        (
            "infinite-loop",
            "python",
            "while True: pass",
            limits("1s", "256m", "64k"),
            Verdict::Timeout,
        ),
        (
            "memory-bomb",
            "python",
            "x = []\nwhile True: x.append(bytearray(10**7))",
            limits("20s", "256m", "64k"),
            Verdict::OutOfMemory,
        ),
        (
            "output-flood",
            "python",
            "while True: print('y' * 1000)",
            limits("20s", "256m", "64k"),
            Verdict::OutputLimit,
        ),
    ];
    for (id, language, code, limits, verdict) in cases {
        let request = ExecRequest {
            limits,
            ..ExecRequest::code(id, language, code)
        };
        let result = client.exec("none", "default", &request).await.unwrap();
        assert_eq!(
            result.status,
            verdict,
            "{id}: {:?} {}",
            result.error,
            result.stderr.to_text_lossy()
        );
    }
    let bomb = ExecRequest {
        limits: limits("5s", "256m", "64k"),
        ..ExecRequest::code("fork-bomb", "bash", ":(){ :|:& };:")
    };
    let result = client.exec("none", "default", &bomb).await.unwrap();
    assert_ne!(result.status, Verdict::BackendError, "{result:?}");
    let result = client
        .exec("none", "default", &python("after-hostile", "print('ok')"))
        .await
        .unwrap();
    assert_eq!(result.stdout.to_text_lossy(), "ok\n");
    assert!(!worker.logs().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_cancel_running_jobs_by_id() {
    let Some((_nats, _worker, client)) = stack(&[]).await else {
        return;
    };
    let request = ExecRequest::command("to-cancel", vec!["sleep".into(), "30".into()]);
    let canceller = client.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        canceller.cancel("default", "to-cancel").await.unwrap();
    });
    let result = client.exec("none", "default", &request).await.unwrap();
    assert_eq!(result.status, Verdict::Cancelled, "{result:?}");
    assert_eq!(result.error.unwrap().kind, ErrorKind::Cancelled);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_running_jobs_finish() {
    let Some((_nats, mut worker, client)) = stack(&[("OPENSHELL_SHUTDOWN_GRACE", "10s")]).await
    else {
        return;
    };
    let request = ExecRequest::command(
        "slow",
        vec!["sh".into(), "-c".into(), "sleep 1; echo done".into()],
    );
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.exec("none", "default", &request).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = worker.terminate().await;
    let result = pending.await.unwrap().unwrap();
    assert_eq!(result.status, Verdict::Completed, "{result:?}");
    assert_eq!(result.stdout.to_text_lossy(), "done\n");
    assert!(status.success(), "{}", worker.logs());
    let error = client
        .exec_with_wait(
            "none",
            "default",
            &python("late", "1"),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, openshell_protocol::ClientError::NoWorkers { .. }),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn config_command_redacts_secrets() {
    let output = OPENSHELL
        .cli(
            ["config"],
            &[
                ("NATS_PASSWORD", "hunter2"),
                ("NATS_USER", "agent"),
                ("LOG_LEVEL", "debug"),
            ],
        )
        .await;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("<redacted>") && !text.contains("hunter2"),
        "{text}"
    );
    assert!(text.contains("log_level = \"debug\""), "{text}");
    let output = OPENSHELL
        .cli(["config"], &[("SANDBOX_DOCKER_MEMORY", "lots")])
        .await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("SANDBOX_DOCKER_MEMORY"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_at_its_quota_waits_and_priority_goes_first() {
    let Some((_nats, _worker, client)) =
        stack(&[("OPENSHELL_SLOTS", "2"), ("OPENSHELL_TENANT_QUOTA", "1")]).await
    else {
        return;
    };
    let exec = |tenant: &'static str, request: ExecRequest| {
        let client = client.clone();
        tokio::spawn(async move {
            let result = client.exec("none", tenant, &request).await.unwrap();
            (result, std::time::Instant::now())
        })
    };
    let sleeper = |id: &str| ExecRequest::command(id, vec!["sleep".into(), "1".into()]);
    // busy-0 runs; busy-1 and busy-2 wait for the busy tenant's quota, not for a slot.
    let busy: Vec<_> = (0..3)
        .map(|n| exec("busy", sleeper(&format!("busy-{n}"))))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quick = exec(
        "quick",
        ExecRequest::command("quick", vec!["echo".into(), "hi".into()]),
    );
    let (quick, quick_done) = quick.await.unwrap();
    assert_eq!(quick.status, Verdict::Completed, "{quick:?}");
    let mut busy_done = Vec::new();
    for task in busy {
        let (result, done) = task.await.unwrap();
        assert_eq!(result.status, Verdict::Completed, "{result:?}");
        busy_done.push(done);
    }
    busy_done.sort();
    assert!(
        quick_done < busy_done[0],
        "the quick tenant's job finished after the busy tenant's first job"
    );
    // The busy tenant ran one job at a time: its last finished ≥ 2 s after its first.
    assert!(busy_done[2] - busy_done[0] >= Duration::from_millis(1900));

    // With both slots held (one for 1 s, one for 3 s), the slot freed first goes to a
    // high-priority job that was queued after a low-priority one; the low one gets that slot
    // only once the high one is done.
    let holders: Vec<_> = [("h1", "1"), ("h2", "3")]
        .into_iter()
        .map(|(tenant, seconds)| {
            exec(
                tenant,
                ExecRequest::command(tenant, vec!["sleep".into(), seconds.into()]),
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut low = ExecRequest::command("low", vec!["true".into()]);
    low.priority = -10;
    let low = exec("lo", low);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut high = ExecRequest::command("high", vec!["true".into()]);
    high.priority = 10;
    let high = exec("hi", high);
    let (_, high_done) = high.await.unwrap();
    let (_, low_done) = low.await.unwrap();
    assert!(
        high_done < low_done,
        "the low-priority job took the first free slot"
    );
    for holder in holders {
        holder.await.unwrap();
    }
}

/// A job killed by a signal reports its number and name in the result.
#[tokio::test(flavor = "multi_thread")]
async fn a_signal_death_is_reported_by_number_and_name() {
    let Some((_nats, _worker, client)) = stack(&[]).await else {
        return;
    };
    let request = ExecRequest::command(
        "killed",
        vec!["sh".into(), "-c".into(), "kill -KILL $$".into()],
    );
    let result = client
        .exec("none", "default", &request)
        .await
        .expect("a result");
    assert_eq!(result.status, Verdict::Completed, "{result:?}");
    assert_eq!(result.signal, Some(9), "{result:?}");
    assert_eq!(result.signal_name.as_deref(), Some("SIGKILL"), "{result:?}");
}

/// A job printing a line a second: each line's chunk arrives while the job still runs, one
/// pause apart, long before the result (arrival order against timestamps, with seconds of
/// slack, not a tight timing assertion).
#[tokio::test(flavor = "multi_thread")]
async fn live_output_arrives_while_the_job_runs() {
    let Some((nats, _worker, _client)) = stack(&[]).await else {
        return;
    };
    let raw = async_nats::connect(nats.url()).await.expect("connect");
    let mut chunks = raw
        .subscribe("openshell.output.default.ticks")
        .await
        .expect("sub");
    raw.flush().await.expect("flush");
    let mut request = ExecRequest::code(
        "ticks",
        "bash",
        "for i in 1 2 3; do echo tick $i; sleep 1; done",
    );
    request.stream = true;
    let payload = Bytes::from(serde_json::to_vec(&request).expect("encode"));
    let sent = tokio::time::Instant::now();
    let reply = tokio::spawn({
        let raw = raw.clone();
        async move {
            let reply = raw
                .request("openshell.exec.none.default", payload)
                .await
                .expect("a result");
            (tokio::time::Instant::now(), reply)
        }
    });
    let mut arrivals = Vec::new();
    while arrivals.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(30), chunks.next())
            .await
            .expect("a chunk within 30 s")
            .expect("a chunk");
        let chunk: openshell_protocol::OutputChunk =
            serde_json::from_slice(&message.payload).expect("a chunk");
        arrivals.push((
            tokio::time::Instant::now(),
            chunk.data.to_text_lossy().into_owned(),
        ));
    }
    let (answered, reply) = reply.await.expect("the request task");
    let result: ExecResult = serde_json::from_slice(&reply.payload).expect("a result");
    assert_eq!(result.stdout.to_text_lossy(), "tick 1\ntick 2\ntick 3\n");
    let lines: Vec<&str> = arrivals.iter().map(|(_, text)| text.as_str()).collect();
    assert_eq!(lines, ["tick 1\n", "tick 2\n", "tick 3\n"]);
    // The job takes 3 s: the first line came at least a second before the result, and the
    // lines came in separate moments rather than all at the end.
    assert!(
        answered - arrivals[0].0 >= Duration::from_millis(1500),
        "{arrivals:?}"
    );
    assert!(
        arrivals[1].0 - arrivals[0].0 >= Duration::from_millis(500),
        "{arrivals:?}"
    );
    assert!(arrivals[0].0 >= sent);
}

/// `exec --durable` queues the job on JetStream, prints its output live as it runs (`--live`),
/// waits for the stored result and exits with the job's code; returned files come back too.
#[tokio::test(flavor = "multi_thread")]
async fn cli_exec_durable_prints_live_and_returns_files() {
    let Some((nats, _worker, _client)) = stack(&[("OPENSHELL_DURABLE", "true")]).await else {
        return;
    };
    let url = nats.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("utf-8 path");
    let output = OPENSHELL
        .cli(
            [
                "exec",
                "--durable",
                "--live",
                "--lang",
                "bash",
                "-c",
                "echo one; sleep 0.3; echo two >&2; printf kept > kept.txt; exit 4",
                "--output-file",
                "*.txt",
                "--output-dir",
                out,
            ],
            &[("NATS_URL", url.as_str()), ("SANDBOX_BACKEND", "none")],
        )
        .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "one\n", "{stderr}");
    assert_eq!(stderr.matches("two").count(), 1, "{stderr}");
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert_eq!(
        std::fs::read(dir.path().join("kept.txt")).expect("kept.txt"),
        b"kept"
    );
}
