//! `NATS_URL` as operators write it, against a real nats-server: a comma-separated list works
//! for the worker and the client commands, a password or token inside a URL is never printed
//! (`openshell config`, `doctor`, connect errors, the worker's "still waiting" log line), and a
//! bad NATS setting stops a client command with the variable's name.

use std::process::Stdio;
use std::time::Duration;

use openshell_test_support::Openshell;
use openshell_test_support::nats::NatsServer;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

/// The password the tests put in URLs; it must never appear in any output.
const SECRET: &str = "hunter2-in-url";

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_url_list_with_a_dead_first_server_works_for_worker_and_exec() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let dead = openshell_test_support::free_port();
    let urls = format!("nats://127.0.0.1:{dead},{}", nats.url());
    let envs = [("NATS_URL", urls.as_str()), ("SANDBOX_BACKEND", "none")];
    let _worker = OPENSHELL.worker(&envs).await;

    let out = OPENSHELL
        .cli(["exec", "--lang", "bash", "-c", "echo listed"], &envs)
        .await;
    assert!(out.status.success(), "exec with {urls}: {}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "listed\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_and_doctor_do_not_print_a_password_in_the_url() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let url = format!("nats://ops:{SECRET}@127.0.0.1:{}", nats.port());
    let envs = [("NATS_URL", url.as_str()), ("SANDBOX_BACKEND", "none")];

    let out = OPENSHELL.cli(["config"], &envs).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains(SECRET),
        "config printed it: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("nats://ops:***@127.0.0.1"),
        "{}",
        text(&out)
    );

    let out = OPENSHELL.cli(["doctor"], &envs).await;
    assert!(
        !text(&out).contains(SECRET),
        "doctor printed it: {}",
        text(&out)
    );
    assert!(text(&out).contains("ok    nats"), "{}", text(&out));
    assert!(
        text(&out).contains("nats://ops:***@127.0.0.1"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_errors_do_not_print_a_password_or_token_in_the_url() {
    let dead = openshell_test_support::free_port();
    let urls = format!("nats://ops:{SECRET}@127.0.0.1:{dead},nats://{SECRET}@127.0.0.1:{dead}");
    let envs = [("NATS_URL", urls.as_str()), ("SANDBOX_BACKEND", "none")];

    let out = OPENSHELL
        .cli(["exec", "--lang", "bash", "-c", "echo no"], &envs)
        .await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains(SECRET),
        "exec printed it: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("nats://***@127.0.0.1"),
        "{}",
        text(&out)
    );

    let out = OPENSHELL.cli(["doctor"], &envs).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains(SECRET),
        "doctor printed it: {}",
        text(&out)
    );
    assert!(text(&out).contains("FAIL  nats"), "{}", text(&out));

    // A URL that does not parse is named, redacted too.
    let bad = format!("nats://ops:{SECRET}@127.0.0.1:port");
    let out = OPENSHELL
        .cli(
            ["exec", "--lang", "bash", "-c", "echo no"],
            &[("NATS_URL", bad.as_str())],
        )
        .await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains(SECRET),
        "exec printed it: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("nats://ops:***@127.0.0.1:port"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_nats_setting_stops_a_client_command_and_names_the_variable() {
    let out = OPENSHELL
        .cli(
            ["exec", "--lang", "bash", "-c", "echo no"],
            &[("NATS_TLS_REQUIRED", "maybe"), ("SANDBOX_BACKEND", "none")],
        )
        .await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("NATS_TLS_REQUIRED"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_still_waiting_log_line_does_not_print_the_password() {
    let dead = openshell_test_support::free_port();
    let url = format!("nats://ops:{SECRET}@127.0.0.1:{dead}");
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_openshell"))
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs([
            ("NATS_URL", url.as_str()),
            ("SANDBOX_BACKEND", "none"),
            ("METRICS_ADDR", "127.0.0.1:0"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn openshell worker");
    let mut log = String::new();
    let mut lines = BufReader::new(worker.stderr.take().expect("piped stderr")).lines();
    let waiting = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            log.push_str(&line);
            log.push('\n');
            if line.contains("still waiting for NATS") {
                return true;
            }
        }
        false
    })
    .await;
    worker.kill().await.expect("kill worker");
    assert_eq!(waiting, Ok(true), "no waiting line: {log}");
    assert!(!log.contains(SECRET), "the worker logged it: {log}");
    assert!(log.contains("nats://ops:***@127.0.0.1"), "{log}");
}
