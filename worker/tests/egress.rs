//! Egress rules on real dockerd, in the `none` backend's bubblewrap sandbox and on a real
//! sshd's host sandbox: a job of a pool with `network = { allow = [...] }` reaches
//! the allowed host and nothing else. Two HTTP servers on this host's loopback stand in for
//! the outside world (the pool pins their names there with `network.resolve`); the NATS server
//! and the worker's metrics port are forbidden targets. The sandbox has no network of its own:
//! its only way out is the worker's egress proxy on a Unix socket. Needs nats-server, and
//! dockerd with the sandbox image, or root with bubblewrap (and sshd for ssh).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use openshell_protocol::{
    AuditEvent, AuditEventType, Client, ErrorKind, ExecRequest, ExecResult, LimitName,
    NetworkAccess, Verdict,
};
use openshell_test_support::nats::NatsServer;
use openshell_test_support::sshd::Sshd;
use openshell_test_support::{Openshell, dockerd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

/// An HTTP server on loopback answering `body` (1 MiB on `/big`); counts its connections.
async fn server(body: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&buffer[..read]),
                    }
                }
                let big = head.starts_with(b"GET /big ");
                let payload = if big {
                    "x".repeat(1 << 20)
                } else {
                    body.to_string()
                };
                let reply = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{payload}",
                    payload.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, connections)
}

/// Every way out a job might try, one line each: `NAME ok BODY` or `NAME fail ERROR`.
const PROBE: &str = r#"
import http.client, os, socket, urllib.request
A, D, N, M = (int(os.environ[k]) for k in ("ALLOWED", "DENIED", "NATS", "METRICS"))
proxied = urllib.request.build_opener()
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def get(opener, url):
    return opener.open(url, timeout=10).read().decode()
def tunnel(host, port):
    conn = http.client.HTTPConnection("127.0.0.1", 3128, timeout=10)
    conn.set_tunnel(host, port)
    conn.request("GET", "/")
    return conn.getresponse().read().decode()
def attempt(name, run):
    try:
        print(name, "ok", run(), flush=True)
    except Exception as error:
        print(name, "fail", type(error).__name__, flush=True)
attempt("proxy-allowed", lambda: get(proxied, f"http://allowed.test:{A}/"))
attempt("direct-allowed", lambda: get(direct, f"http://allowed.test:{A}/"))
attempt("connect-allowed", lambda: tunnel("allowed.test", A))
attempt("proxy-denied", lambda: get(proxied, f"http://denied.test:{D}/"))
attempt("connect-denied", lambda: tunnel("denied.test", D))
attempt("dns-denied", lambda: socket.getaddrinfo("denied.test", D))
attempt("direct-denied", lambda: get(direct, f"http://denied.test:{D}/"))
attempt("direct-raw-ip", lambda: get(direct, f"http://127.0.0.1:{A}/"))
attempt("proxy-raw-ip", lambda: get(proxied, f"http://127.0.0.1:{A}/"))
attempt("proxy-other-port", lambda: get(proxied, f"http://allowed.test:{D}/"))
attempt("direct-other-port", lambda: socket.create_connection(("allowed.test", D), timeout=5))
attempt("nats", lambda: tunnel("127.0.0.1", N))
attempt("metrics", lambda: get(proxied, f"http://127.0.0.1:{M}/metrics"))
attempt("metadata", lambda: get(proxied, "http://169.254.169.254/latest/meta-data/"))
attempt("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("192.0.2.1", 53)))
"#;

/// The attempts the proxy must see from [`PROBE`], as (destination, port is `ALLOWED`,
/// allowed); the others never leave the sandbox.
fn expected(allowed: u16, denied: u16, nats: u16, metrics: u16) -> Vec<(String, u16, bool)> {
    let mut expected = vec![
        ("allowed.test".to_string(), allowed, true),
        ("allowed.test".to_string(), allowed, true),
        ("allowed.test".to_string(), allowed, true),
        ("denied.test".to_string(), denied, false),
        ("denied.test".to_string(), denied, false),
        ("127.0.0.1".to_string(), allowed, false),
        ("allowed.test".to_string(), denied, false),
        ("127.0.0.1".to_string(), nats, false),
        ("127.0.0.1".to_string(), metrics, false),
        ("169.254.169.254".to_string(), 80, false),
    ];
    expected.sort();
    expected
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_jobs_reach_allowed_hosts_only_and_every_attempt_is_audited_once() {
    if !dockerd::available() {
        return;
    }
    let backend = format!(
        "backend = \"docker\"\n\n[pools.egress.docker]\nimage = \"{}\"\nwarm_pool = 0\n",
        dockerd::image()
    );
    jobs_reach_allowed_hosts_only(&backend).await;
}

/// The same on the `none` backend, in its bubblewrap sandbox (the worker runs as root here).
#[tokio::test(flavor = "multi_thread")]
async fn local_jobs_reach_allowed_hosts_only_and_every_attempt_is_audited_once() {
    if !nix::unistd::Uid::effective().is_root() || !std::path::Path::new("/usr/bin/bwrap").exists()
    {
        assert!(
            !openshell_test_support::in_ci(),
            "the none backend's sandbox needs root and bubblewrap: run deploy/setup.sh"
        );
        eprintln!("SKIP: the none backend's sandbox needs root and bubblewrap");
        return;
    }
    jobs_reach_allowed_hosts_only(
        "backend = \"none\"\n[pools.egress.local]\nsandbox = \"required\"\n",
    )
    .await;
}

/// The same on the `ssh` backend against a real sshd prepared by deploy/ssh-host/prepare.sh:
/// the job's bubblewrap sandbox on the host has no network, and its egress socket comes back
/// over the job's SSH connection to the worker's proxy.
#[tokio::test(flavor = "multi_thread")]
async fn ssh_jobs_reach_allowed_hosts_only_and_every_attempt_is_audited_once() {
    let Some(sshd) = Sshd::start().await else {
        return;
    };
    let settings = sshd.settings();
    let backend = format!(
        "backend = \"ssh\"\n[pools.egress.ssh]\nhosts = [\"127.0.0.1:{}\"]\nuser = \"{}\"\n\
         key_path = \"{}\"\nknown_hosts = \"{}\"\n",
        sshd.port(),
        settings.user,
        sshd.client_key().display(),
        sshd.known_hosts().display(),
    );
    let run = tokio::spawn(async move { jobs_reach_allowed_hosts_only(&backend).await }).await;
    assert!(
        run.is_ok(),
        "the test failed (above); sshd said:\n{}",
        sshd.log()
    );
    // Each job's egress directory on the host went with it.
    let left: Vec<_> = std::fs::read_dir("/tmp")
        .expect("read /tmp")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("openshell-egress-"))
        .collect();
    assert!(left.is_empty(), "{left:?}\n{}", sshd.log());
}

/// A pool `egress` on the backend `backend` (its TOML lines) allowing one of two servers.
async fn jobs_reach_allowed_hosts_only(backend: &str) {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let (allowed, _) = server("hello from the allowed host").await;
    let (denied, denied_connections) = server("secret from the denied host").await;
    let nats_port = nats
        .url()
        .rsplit(':')
        .next()
        .expect("as the test set it up")
        .parse::<u16>()
        .expect("as the test set it up");
    let dirs = tempfile::tempdir().expect("egress dir");
    let config = dirs.path().join("openshell.toml");
    let egress_dir = dirs.path().join("egress");
    std::fs::write(
        &config,
        format!(
            "[pools.egress]\n{backend}\n\
             [pools.egress.network]\nallow = [\"allowed.test:{allowed}\"]\nmax_bytes = \"256k\"\n\
             dir = \"{dir}\"\nresolve = {{ \"allowed.test\" = \"127.0.0.1\", \"denied.test\" = \"127.0.0.1\" }}\n",
            dir = egress_dir.display(),
        ),
    )
    .expect("write config");
    let url = nats.url();
    let config_path = config.display().to_string();
    let docker_host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let mut envs = vec![
        ("NATS_URL", url.as_str()),
        ("OPENSHELL_CONFIG", config_path.as_str()),
        ("LOG_LEVEL", "info"),
    ];
    if !docker_host.is_empty() {
        envs.push(("DOCKER_HOST", docker_host.as_str()));
    }
    let mut worker = OPENSHELL.worker(&envs).await;
    let metrics_port: u16 = worker
        .metrics_addr()
        .rsplit(':')
        .next()
        .expect("as the test set it up")
        .parse()
        .expect("as the test set it up");
    let client = Client::connect(&url).await.expect("client connects");
    let nats_client = async_nats::connect(&url).await.expect("audit reader");
    let mut audit = nats_client
        .subscribe("openshell.audit.>")
        .await
        .expect("as the test set it up");
    nats_client.flush().await.expect("as the test set it up");

    let mut probe = ExecRequest::code("probe", "python", PROBE);
    probe.network = true.into();
    probe.env = BTreeMap::from([
        ("ALLOWED".into(), allowed.to_string()),
        ("DENIED".into(), denied.to_string()),
        ("NATS".into(), nats_port.to_string()),
        ("METRICS".into(), metrics_port.to_string()),
    ]);
    let result = client.exec("egress", "acme", &probe).await.expect("result");
    let lines = output_lines(&result);
    assert_eq!(
        result.status,
        Verdict::Completed,
        "{result:#?}\n{}",
        worker.logs()
    );
    for reached in ["proxy-allowed", "direct-allowed", "connect-allowed"] {
        assert_eq!(
            lines[reached], "ok hello from the allowed host",
            "{reached}: {lines:#?}"
        );
    }
    for refused in [
        "proxy-denied",
        "connect-denied",
        "dns-denied",
        "direct-denied",
        "direct-raw-ip",
        "proxy-raw-ip",
        "proxy-other-port",
        "direct-other-port",
        "nats",
        "metrics",
        "metadata",
        "udp",
    ] {
        assert!(lines[refused].starts_with("fail "), "{refused}: {lines:#?}");
    }
    assert_eq!(denied_connections.load(Ordering::SeqCst), 0);
    let network = &result.enforcement[&LimitName::Network];
    assert!(
        network.mechanism.contains("egress proxy")
            && network
                .mechanism
                .contains(&format!("allowed.test:{allowed}")),
        "{network:?}"
    );

    let events = job_events(&mut audit, "probe").await;
    let mut seen: Vec<(String, u16, bool)> = events
        .iter()
        .filter(|event| event.event == AuditEventType::Network)
        .map(|event| {
            let attempt = event
                .network
                .as_ref()
                .expect("network events carry the attempt");
            (attempt.destination.clone(), attempt.port, attempt.allowed)
        })
        .collect();
    seen.sort();
    assert_eq!(seen, expected(allowed, denied, nats_port, metrics_port));
    let allowed_bytes = events
        .iter()
        .filter_map(|event| event.network.as_ref())
        .filter(|attempt| attempt.allowed)
        .all(|attempt| attempt.bytes_received > 0 && attempt.bytes_sent > 0);
    assert!(allowed_bytes, "{events:#?}");

    // One metric per attempt, as per audit event.
    let (_, metrics) =
        openshell_test_support::http::get(&worker.metrics_addr(), "/metrics", "text/plain").await;
    for (outcome, count) in [("allowed", 3), ("denied", 7)] {
        let series = format!(
            "openshell_egress_connections_total{{pool=\"egress\",outcome=\"{outcome}\"}} {count}"
        );
        assert!(metrics.contains(&series), "no {series} in\n{metrics}");
    }

    // A subset of the pool's rules is granted; more is refused before anything runs.
    let mut subset = ExecRequest::code(
        "subset",
        "python",
        "import urllib.request, os\nprint(urllib.request.urlopen(f\"http://allowed.test:{os.environ['ALLOWED']}/\", timeout=10).read().decode())\n",
    );
    subset.env = BTreeMap::from([("ALLOWED".into(), allowed.to_string())]);
    subset.network = NetworkAccess::Only(vec![
        format!("allowed.test:{allowed}")
            .parse()
            .expect("as the test set it up"),
    ]);
    let result = client
        .exec("egress", "acme", &subset)
        .await
        .expect("result");
    assert_eq!(result.status, Verdict::Completed, "{result:#?}");
    assert_eq!(
        result.stdout.to_text_lossy(),
        "hello from the allowed host\n"
    );
    let mut more = subset.clone();
    more.id = "more".into();
    more.network = NetworkAccess::Only(vec![
        format!("denied.test:{denied}")
            .parse()
            .expect("as the test set it up"),
    ]);
    let result = client.exec("egress", "acme", &more).await.expect("result");
    assert_eq!(result.status, Verdict::Rejected);
    assert_eq!(
        result.error.expect("as the test set it up").kind,
        ErrorKind::NetworkNotAllowed
    );

    // Past network.max_bytes the job's connections are cut and its verdict says so.
    let mut big = ExecRequest::code(
        "big",
        "python",
        "import urllib.request, os\ntry:\n    data = urllib.request.urlopen(f\"http://allowed.test:{os.environ['ALLOWED']}/big\", timeout=10).read()\n    print(len(data))\nexcept Exception as error:\n    print('cut', type(error).__name__)\n",
    );
    big.env = BTreeMap::from([("ALLOWED".into(), allowed.to_string())]);
    big.network = true.into();
    let result = client.exec("egress", "acme", &big).await.expect("result");
    assert_eq!(result.status, Verdict::NetworkLimit, "{result:#?}");
    assert_eq!(
        result.error.expect("as the test set it up").kind,
        ErrorKind::NetworkLimitExceeded
    );
    assert!(
        !result.stdout.to_text_lossy().contains("1048576"),
        "{:?}",
        result.stdout.to_text_lossy()
    );

    // Without `network` the job has no way out at all: no socket, no forwarder.
    let mut closed = ExecRequest::code(
        "closed",
        "python",
        "import os\nprint(os.path.exists('/run/openshell-egress'), os.environ.get('HTTP_PROXY'))\n",
    );
    closed.network = false.into();
    let result = client
        .exec("egress", "acme", &closed)
        .await
        .expect("result");
    assert_eq!(result.stdout.to_text_lossy(), "False None\n", "{result:#?}");
    // Each job's proxy directory went with it.
    let left: Vec<_> = std::fs::read_dir(&egress_dir)
        .map(|dir| dir.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    worker.terminate().await;
}

fn output_lines(result: &ExecResult) -> BTreeMap<String, String> {
    result
        .stdout
        .to_text_lossy()
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(name, rest)| (name.to_string(), rest.to_string()))
        .collect()
}

/// The audit events of job `id`, up to its `finished`.
async fn job_events(audit: &mut async_nats::Subscriber, id: &str) -> Vec<AuditEvent> {
    let mut events = Vec::new();
    let collect = async {
        while let Some(message) = audit.next().await {
            let Ok(event) = serde_json::from_slice::<AuditEvent>(&message.payload) else {
                continue;
            };
            if event.job_id != id {
                continue;
            }
            let done = event.event == AuditEventType::Finished;
            events.push(event);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), collect)
        .await
        .expect("the job's audit trail ends with finished");
    events
}
