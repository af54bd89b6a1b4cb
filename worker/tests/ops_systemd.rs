//! `deploy/systemd/`: the unit and its SSH drop-in pass `systemd-analyze verify` without a
//! word of complaint; the unit is hardened and runs as a dynamic user; the drop-in hands the
//! key and known_hosts over as credentials under the variables the worker reads, and the
//! worker's key check accepts a key laid out as systemd lays out a credential (owned by the
//! service's user, mode 0400).

mod kit;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use openshell_test_support::{deploy_dir, tool};
use openshell_worker::config::env;

/// The binary under test, which `ExecStart=` must name for `verify` to find it.
const OPENSHELL: &str = env!("CARGO_BIN_EXE_openshell");
/// Where the unit expects the binary.
const INSTALLED: &str = "/usr/local/bin/openshell";
/// The unit's file name.
const UNIT: &str = "openshell-worker.service";
/// The SSH drop-in, relative to `deploy/systemd/`.
const SSH_DROP_IN: &str = "openshell-worker.service.d/ssh.conf";

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy_dir().join("systemd").join(path))
        .unwrap_or_else(|error| panic!("read deploy/systemd/{path}: {error}"))
}

/// Every `Key=value` of a unit file, values of repeated keys in order.
fn settings(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            settings
                .entry(key.to_string())
                .or_default()
                .push(value.to_string());
        }
    }
    settings
}

#[test]
fn unit_and_ssh_drop_in_pass_systemd_analyze_verify() {
    let Some(analyze) = tool("systemd-analyze", "apt-get install systemd") else {
        return;
    };
    // The unit as installed, the binary path pointing at the one under test.
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join(UNIT);
    std::fs::write(&unit, read(UNIT).replace(INSTALLED, OPENSHELL)).unwrap();
    let drop_in = dir.path().join(SSH_DROP_IN);
    std::fs::create_dir_all(drop_in.parent().unwrap()).unwrap();
    std::fs::write(&drop_in, read(SSH_DROP_IN)).unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&unit)
        // Our directory first, then the system's (for the targets the unit orders after).
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display()))
        .output()
        .expect("run systemd-analyze verify");
    let complaints: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&out.stdout).lines())
        .filter(|line| line.contains(&*dir.path().to_string_lossy()))
        // It notes that a unit outside the search path has no known prefix; that is our copy.
        .filter(|line| !line.contains("does not start with any known prefix"))
        .map(str::to_string)
        .collect();
    assert!(out.status.success(), "systemd-analyze verify: {out:?}");
    assert!(complaints.is_empty(), "{complaints:#?}");
}

#[test]
fn unit_is_hardened_and_the_drop_in_hands_over_the_key_as_a_credential() {
    let unit = settings(&read(UNIT));
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("SystemCallFilter", "@system-service"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ] {
        assert!(
            unit.get(key)
                .is_some_and(|values| values.iter().any(|v| v == value)),
            "the unit lacks {key}={value}"
        );
    }
    assert!(unit["ExecStart"][0].starts_with(&format!("{INSTALLED} worker")));

    // Each credential is loaded from a file and named by a variable the worker reads.
    let drop_in = settings(&read(SSH_DROP_IN));
    let credentials: BTreeMap<&str, &str> = drop_in["LoadCredential"]
        .iter()
        .map(|value| value.split_once(':').expect("ID:PATH"))
        .collect();
    let environment: BTreeMap<&str, &str> = drop_in["Environment"]
        .iter()
        .flat_map(|value| value.split_whitespace())
        .map(|pair| pair.split_once('=').expect("NAME=value"))
        .collect();
    for (variable, id) in [
        (env::SSH_KEY_PATH, "ssh-key"),
        (env::SSH_KNOWN_HOSTS, "ssh-known-hosts"),
    ] {
        assert_eq!(environment[variable], format!("%d/{id}"), "{variable}");
        assert!(
            Path::new(credentials[id]).is_absolute(),
            "{id} is loaded from a file"
        );
    }
    assert_eq!(environment.len(), 2, "{environment:?}");

    // An SSH pool reads those variables.
    let vars: BTreeMap<String, String> = [
        (env::SANDBOX_BACKEND, "ssh"),
        (env::SSH_HOST, "sandbox-1"),
        (
            env::SSH_KEY_PATH,
            "/run/credentials/openshell-worker.service/ssh-key",
        ),
        (
            env::SSH_KNOWN_HOSTS,
            "/run/credentials/openshell-worker.service/ssh-known-hosts",
        ),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect();
    kit::load_config(&vars, SSH_DROP_IN);
}

#[test]
fn the_key_check_accepts_a_credential_as_systemd_lays_it_out() {
    let Some(keygen) = tool("ssh-keygen", "apt-get install openssh-client") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("ssh-key");
    let out = Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .expect("run ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    // A credential: owned by the service's user (here: this test's), read-only, 0400.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
    openshell_backend_ssh::key::load(&key).expect("a 0400 credential is accepted");
    // What the drop-in avoids: the key readable by the unit's group (or anyone).
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o440)).unwrap();
    assert!(openshell_backend_ssh::key::load(&key).is_err());
}
