//! YAML as JSON values, read by Python's yaml module (python3-yaml, which `deploy/setup.sh
//! --install-only` installs with docker-compose): the deploy tests read compose files,
//! Kubernetes manifests and Prometheus configuration with it, rather than a YAML crate of
//! their own.

use std::io::Write;
use std::process::{Command, Stdio};

/// Every document of a YAML stream, as JSON (empty documents left out).
const TO_JSON: &str = "import sys, yaml, json\n\
json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)";

/// The documents of `text`, or `None` (with a skip message) when python3 with yaml is
/// missing outside CI; under CI that panics. Panics on YAML that does not parse.
pub fn documents(text: &str) -> Option<Vec<serde_json::Value>> {
    let Some(python) = python() else {
        assert!(
            !crate::in_ci(),
            "python3 with yaml not found under CI: run deploy/setup.sh --install-only"
        );
        eprintln!("SKIP: python3-yaml not found (run deploy/setup.sh --install-only)");
        return None;
    };
    let mut child = Command::new(python)
        .args(["-c", TO_JSON])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("write YAML to python3");
    let out = child.wait_with_output().expect("python3 output");
    assert!(
        out.status.success(),
        "YAML does not parse:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("python3 printed JSON"))
}

/// A python3 that imports yaml.
fn python() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import yaml"])
            .output()
            .is_ok_and(|out| out.status.success())
    })
}
