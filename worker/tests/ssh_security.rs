//! The SSH backend refuses what OpenSSH would: unknown or changed host keys, keys the server
//! does not accept, private keys others can read, and root.

use std::os::unix::fs::PermissionsExt;

use openshell_backend::BackendError;
use openshell_backend_ssh::{SshBackend, SshSettings};
use openshell_protocol::ErrorKind;
use openshell_test_support::Openshell;
use openshell_test_support::nats::NatsServer;

use openshell_test_support::sshd::{Sshd, keygen};

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

async fn start(settings: SshSettings) -> Result<SshBackend, BackendError> {
    SshBackend::start(settings, &openshell_backend::PoolContext::bare("ssh")).await
}

fn assert_connection_failed(error: &BackendError, says: &[&str]) {
    assert_eq!(error.kind, ErrorKind::ConnectionFailed, "{error}");
    assert!(
        error.message.starts_with("Sandbox connection failed"),
        "{error}"
    );
    for words in says {
        assert!(
            error.to_string().contains(words),
            "`{words}` missing from: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_the_server_does_not_accept_is_refused() {
    let Some(sshd) = Sshd::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let stranger = dir.path().join("stranger");
    keygen(&stranger);
    let settings = SshSettings {
        key_path: Some(stranger.clone()),
        ..sshd.settings()
    };
    let error = start(settings)
        .await
        .err()
        .expect("a stranger's key was accepted");
    let key = stranger.display().to_string();
    assert_connection_failed(
        &error,
        &["auth refused", "openshell-test", &key, "authorized_keys"],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_host_key_is_refused_even_with_accept_new() {
    let Some(mut sshd) = Sshd::start().await else {
        return;
    };
    let backend = start(sshd.settings()).await.expect("first contact");
    drop(backend);
    sshd.change_host_key().await;
    let settings = SshSettings {
        accept_new_host_keys: true,
        ..sshd.settings()
    };
    let error = start(settings)
        .await
        .err()
        .expect("a changed host key was accepted");
    assert_connection_failed(
        &error,
        &[
            "host key mismatch",
            "line 1",
            "ssh-keygen -R '[127.0.0.1]:",
            "ssh-keyscan -p",
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_host_is_refused_unless_accept_new_is_set() {
    let Some(sshd) = Sshd::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("known_hosts");
    let settings = SshSettings {
        known_hosts: Some(empty.clone()),
        ..sshd.settings()
    };
    let error = start(settings.clone())
        .await
        .err()
        .expect("an unknown host was accepted");
    assert_connection_failed(
        &error,
        &[
            "host key mismatch",
            "is not in",
            "ssh-keyscan -p",
            "SHA256:",
        ],
    );
    let trusting = SshSettings {
        accept_new_host_keys: true,
        ..settings.clone()
    };
    start(trusting)
        .await
        .expect("accept_new_host_keys trusts a first contact");
    let recorded = std::fs::read_to_string(&empty).unwrap();
    assert!(
        recorded
            .trim_start()
            .starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", sshd.port())),
        "{recorded}"
    );
    start(settings)
        .await
        .expect("the recorded key is now known");
}

#[tokio::test(flavor = "multi_thread")]
async fn loose_key_permissions_and_root_are_refused_before_connecting() {
    let Some(sshd) = Sshd::start().await else {
        return;
    };
    let key = sshd.client_key();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = SshBackend::new(
        sshd.settings(),
        &openshell_backend::PoolContext::bare("ssh"),
    )
    .err()
    .expect("a world-readable key was used");
    assert_eq!(error.kind, ErrorKind::SandboxStartFailed);
    assert!(
        error
            .to_string()
            .contains(&format!("chmod 600 {}", key.display())),
        "{error}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let root = SshSettings {
        user: "root".into(),
        ..sshd.settings()
    };
    let error = SshBackend::new(root, &openshell_backend::PoolContext::bare("ssh"))
        .err()
        .expect("root was accepted");
    assert!(error.to_string().contains("may run as root"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_host_is_a_connection_failure_naming_it() {
    let Some(sshd) = Sshd::start().await else {
        return;
    };
    let port = openshell_test_support::free_port();
    let settings = SshSettings {
        hosts: vec![format!("127.0.0.1:{port}")],
        ..sshd.settings()
    };
    let backend = start(settings)
        .await
        .expect("an unreachable host only warns at start");
    let error = openshell_backend::Backend::health(&backend)
        .await
        .unwrap_err();
    assert_connection_failed(&error, &["host unreachable", &format!("127.0.0.1:{port}")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_without_the_sandbox_helper_is_refused_with_what_to_do() {
    let Some(sshd) = Sshd::start().await else {
        return;
    };
    let settings = SshSettings {
        helper: "/usr/local/libexec/openshell/absent".into(),
        ..sshd.settings()
    };
    let error = start(settings)
        .await
        .err()
        .expect("a host without the helper was accepted");
    assert_eq!(error.kind, ErrorKind::SandboxStartFailed, "{error}");
    for words in ["no sandbox helper answered", "prepare.sh", "sudo"] {
        assert!(
            error.to_string().contains(words),
            "`{words}` missing from: {error}"
        );
    }
}

/// `openshell doctor` probes the SSH host: healthy when prepared, and naming prepare.sh when
/// the pool points at a helper the host does not have.
#[tokio::test(flavor = "multi_thread")]
async fn openshell_doctor_checks_the_ssh_hosts_sandbox() {
    let Some(sshd) = Sshd::start().await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let settings = sshd.settings();
    let doctor = |helper: &str| {
        let config = dir
            .path()
            .join(format!("{}.toml", helper.replace('/', "_")));
        std::fs::write(
            &config,
            format!(
                "[pools.remote]\nbackend = \"ssh\"\n[pools.remote.ssh]\nhosts = [\"127.0.0.1:{}\"]\n\
                 user = \"{}\"\nkey_path = \"{}\"\nknown_hosts = \"{}\"\nhelper = \"{helper}\"\n",
                sshd.port(),
                settings.user,
                sshd.client_key().display(),
                sshd.known_hosts().display(),
            ),
        )
        .unwrap();
        let url = nats.url();
        async move {
            let config = config.display().to_string();
            let out = OPENSHELL
                .cli(["doctor", "--config", &config], &[("NATS_URL", &url)])
                .await;
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }
    };
    let (ok, text) = doctor(openshell_backend_ssh::settings::DEFAULT_HELPER).await;
    assert!(ok, "{text}");
    assert!(
        text.contains("ok    pool remote") && text.contains("ssh backend healthy"),
        "{text}"
    );
    let (ok, text) = doctor("/usr/local/libexec/openshell/absent").await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("FAIL  pool remote") && text.contains("prepare.sh"),
        "{text}"
    );
}

/// The OpenSSH client logged in as the transport user with the worker's key, asking `forward`.
fn ssh_forwarding(sshd: &Sshd, forward: &[&str]) -> std::process::Output {
    std::process::Command::new("ssh")
        .args([
            "-T",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .args(["-o", "ExitOnForwardFailure=yes", "-o", "ConnectTimeout=10"])
        .arg(format!(
            "-oUserKnownHostsFile={}",
            sshd.known_hosts().display()
        ))
        .arg("-i")
        .arg(sshd.client_key())
        .args(["-p", &sshd.port().to_string()])
        .args(forward)
        .arg(format!(
            "{}@127.0.0.1",
            openshell_test_support::sshd::TEST_USER
        ))
        .arg("true")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the OpenSSH client")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_transport_key_opens_no_tcp_forward_either_way() {
    let Some(sshd) = Sshd::start().await else {
        return;
    };
    // A remote TCP listener on the host (what `AllowTcpForwarding remote` would allow without
    // `PermitListen none`): refused, and nothing listens there afterwards.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let remote = format!("127.0.0.1:{port}:127.0.0.1:{}", sshd.port());
    let out = ssh_forwarding(&sshd, &["-N", "-R", &remote]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "remote forward accepted: {stderr}");
    assert!(stderr.contains("remote port forwarding failed"), "{stderr}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on the port the refused forward asked for"
    );
    // A connection from the host to anywhere (direct-tcpip, as `-L` and `-W` use): refused.
    let target = format!("127.0.0.1:{}", sshd.port());
    let out = ssh_forwarding(&sshd, &["-W", &target]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "direct-tcpip accepted: {stderr}");
    assert!(stderr.contains("administratively prohibited"), "{stderr}");
}
