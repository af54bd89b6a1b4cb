//! `openshell doctor` against a real nats-server: passes on a good setup, names what to fix
//! and exits non-zero on a broken one.

use openshell_test_support::Openshell;
use openshell_test_support::nats::NatsServer;

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

#[tokio::test(flavor = "multi_thread")]
async fn doctor_passes_with_nats_and_a_healthy_backend() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let out = OPENSHELL
        .cli(
            ["doctor"],
            &[("NATS_URL", url.as_str()), ("SANDBOX_BACKEND", "none")],
        )
        .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("ok    nats"), "{text}");
    assert!(text.contains("ok    pool none"), "{text}");
    assert!(text.contains("clock"), "{text}");
    assert!(text.contains("WARN  audit key"), "{text}");
    assert!(text.contains("all checks passed"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_fails_on_an_unreadable_audit_key() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let out = OPENSHELL
        .cli(
            ["doctor"],
            &[
                ("NATS_URL", url.as_str()),
                ("SANDBOX_BACKEND", "none"),
                ("OPENSHELL_AUDIT_KEY", "/nonexistent/audit-key.pem"),
            ],
        )
        .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("FAIL  audit key") && text.contains("/nonexistent/audit-key.pem"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_fails_and_says_what_to_fix_when_nats_is_down() {
    let port = openshell_test_support::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let out = OPENSHELL
        .cli(
            ["doctor"],
            &[("NATS_URL", url.as_str()), ("SANDBOX_BACKEND", "none")],
        )
        .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("FAIL  nats"), "{text}");
    assert!(text.contains("deploy/setup.sh"), "names the fix: {text}");
    assert!(text.contains("1 check(s) failed"), "{text}");
}
