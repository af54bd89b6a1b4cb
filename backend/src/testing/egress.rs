//! Hostile cases for jobs held to egress rules: the egress socket is the sandbox's only way
//! out. The test stands in for the worker's proxy on the socket and records what arrives.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use openshell_protocol::{EnforcementStatus, LimitName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use super::{assert_exited, code_job, hostile_limits, marker, run};
use crate::egress::SOCKET;
use crate::{Backend, EgressEndpoint, Job};

/// What the job tries: one line each, `NAME ok ANSWER` or `NAME fail ERROR`.
const PROBE: &str = r#"
import socket
def attempt(name, run):
    try:
        print(name, "ok", run(), flush=True)
    except Exception as error:
        print(name, "fail", type(error).__name__, flush=True)
def named():
    connection = socket.create_connection(("allowed.test", 8080), timeout=10)
    data = b""
    while True:
        chunk = connection.recv(100)
        if not chunk:
            return data.decode().strip()
        data += chunk
attempt("named", named)
attempt("raw-ip", lambda: socket.create_connection(("192.0.2.1", 80), timeout=3))
attempt("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("192.0.2.1", 53)))
attempt("dns", lambda: socket.getaddrinfo("example.com", 443))
attempt("other-port", lambda: socket.create_connection(("allowed.test", 8081), timeout=3))
"#;

/// A directory removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A job with an egress endpoint reaches its allowed name only through the socket (as one
/// `CONNECT`), and a raw IP, UDP, DNS and another port get nowhere. Skipped (said so) by
/// backends without the egress capability: admission never sends them such jobs.
pub async fn egress_jobs_get_out_only_through_their_socket(backend: &dyn Backend) {
    if let Err(error) = backend.health().await {
        panic!("{} is not healthy: {error}", backend.kind());
    }
    let holds = backend
        .capabilities()
        .get(&LimitName::Egress)
        .is_some_and(|entry| entry.status != EnforcementStatus::NotEnforced);
    if !holds {
        eprintln!(
            "{} cannot hold jobs to egress rules: case skipped",
            backend.kind()
        );
        return;
    }
    let dir = Dir(std::env::temp_dir().join(marker("egress")));
    std::fs::create_dir_all(&dir.0).expect("egress dir");
    std::fs::set_permissions(&dir.0, PermissionsExt::from_mode(0o755)).expect("open the dir");
    let endpoint = EgressEndpoint {
        dir: dir.0.clone(),
        names: vec![("allowed.test".into(), 8080)],
    };
    endpoint.write_forwarder().expect("write the forwarder");
    let socket = dir.0.join(SOCKET);
    let listener = UnixListener::bind(&socket).expect("bind the socket");
    std::fs::set_permissions(&socket, PermissionsExt::from_mode(0o666)).expect("open it");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&requests);
    let proxy = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buffer = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => head.extend_from_slice(&buffer[..read]),
                }
            }
            let line = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            recorded.lock().expect("requests").push(line);
            let _ = stream
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\npong\n")
                .await;
            let _ = stream.shutdown().await;
        }
    });
    let job = Job {
        egress: Some(endpoint),
        limits: hostile_limits(),
        ..code_job("python", PROBE, &[])
    };
    let run = run(backend, job).await;
    proxy.abort();
    assert_exited(&run, 0);
    let stdout = run.stdout();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first().copied(), Some("named ok pong"), "{stdout}");
    for line in &lines[1..] {
        assert!(line.contains(" fail "), "got out: {line}\n{stdout}");
    }
    assert_eq!(lines.len(), 5, "{stdout}\n{}", run.stderr());
    assert_eq!(
        *requests.lock().expect("requests"),
        ["CONNECT allowed.test:8080 HTTP/1.1"]
    );
}
