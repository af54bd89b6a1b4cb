use std::collections::BTreeMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::mpsc;

use super::*;

/// A TCP server on loopback answering every connection with `reply` after reading a request.
async fn server(reply: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let _ = stream.write_all(reply).await;
            });
        }
    });
    port
}

fn policy(port: u16, max_bytes: Option<u64>) -> EgressPolicy {
    EgressPolicy {
        rules: vec![format!("allowed.test:{port}").parse().unwrap()],
        pins: BTreeMap::from([(
            "allowed.test".to_string(),
            vec!["127.0.0.1".parse().unwrap()],
        )]),
        max_bytes,
    }
}

async fn ask(proxy: &EgressProxy, request: &str) -> String {
    let mut stream = UnixStream::connect(proxy.socket()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn allowed_hosts_pass_and_everything_else_is_refused_once_each() {
    let port = server(b"HTTP/1.0 200 OK\r\n\r\nhello").await;
    let parent = tempfile::tempdir().unwrap();
    let (sender, mut attempts) = mpsc::unbounded_channel();
    let proxy = EgressProxy::start(parent.path(), "j1", policy(port, None), sender).unwrap();
    assert_eq!(proxy.endpoint().names, [("allowed.test".to_string(), port)]);
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(parent.path()),
        0o711,
        "others may not list the jobs' directories"
    );
    assert_eq!(mode(&proxy.socket()), 0o666);
    let plain = ask(
        &proxy,
        &format!("GET http://allowed.test:{port}/ HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n"),
    )
    .await;
    assert!(plain.ends_with("hello"), "{plain}");
    let tunnel = ask(
        &proxy,
        &format!("CONNECT allowed.test:{port} HTTP/1.1\r\n\r\nGET / HTTP/1.0\r\n\r\n"),
    )
    .await;
    assert!(
        tunnel.starts_with("HTTP/1.1 200 Connection established") && tunnel.ends_with("hello"),
        "{tunnel}"
    );
    for refused in [
        format!("CONNECT denied.test:{port} HTTP/1.1\r\n\r\n"),
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n"),
        "CONNECT allowed.test:1 HTTP/1.1\r\n\r\n".to_string(),
        "CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n".to_string(),
        "\x16\x03\x01 not a proxy request\r\n\r\n".to_string(),
    ] {
        let answer = ask(&proxy, &refused).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{refused}: {answer}");
    }
    let summary = proxy.finish().await;
    let mut seen = Vec::new();
    while let Ok(attempt) = attempts.try_recv() {
        seen.push(attempt);
    }
    assert_eq!(seen.len(), 7, "{seen:#?}");
    let allowed: Vec<_> = seen.iter().filter(|attempt| attempt.allowed).collect();
    assert_eq!(allowed.len(), 2);
    assert!(
        allowed
            .iter()
            .all(|attempt| attempt.bytes_received > 0 && attempt.bytes_sent > 0)
    );
    assert_eq!(
        summary.bytes,
        allowed
            .iter()
            .map(|a| a.bytes_sent + a.bytes_received)
            .sum::<u64>()
    );
    assert!(!summary.over_limit);
    assert!(!parent.path().join("egress.sock").exists());
}

#[tokio::test]
async fn the_byte_cap_cuts_the_job_and_refuses_what_comes_after() {
    static BIG: [u8; 64 * 1024] = [b'x'; 64 * 1024];
    let port = server(&BIG).await;
    let parent = tempfile::tempdir().unwrap();
    let (sender, mut attempts) = mpsc::unbounded_channel();
    let proxy = EgressProxy::start(parent.path(), "j2", policy(port, Some(1000)), sender).unwrap();
    let first = ask(
        &proxy,
        &format!("CONNECT allowed.test:{port} HTTP/1.1\r\n\r\nGET /\r\n\r\n"),
    )
    .await;
    assert!(first.len() < 2000, "{} bytes got through", first.len());
    let second = ask(
        &proxy,
        &format!("CONNECT allowed.test:{port} HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert!(
        second.starts_with("HTTP/1.1 403") && second.contains("byte limit"),
        "{second}"
    );
    let summary = proxy.finish().await;
    assert!(summary.over_limit);
    let mut seen = Vec::new();
    while let Ok(attempt) = attempts.try_recv() {
        seen.push(attempt);
    }
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let cut = seen.iter().find(|attempt| attempt.allowed).unwrap();
    assert!(
        cut.reason.as_deref().unwrap().contains("byte limit"),
        "{cut:?}"
    );
}

#[tokio::test]
async fn a_tunnel_to_an_allowed_name_cannot_carry_a_handshake_for_another() {
    let port = server(b"HTTP/1.0 200 OK\r\n\r\nhello").await;
    let parent = tempfile::tempdir().unwrap();
    let (sender, mut attempts) = mpsc::unbounded_channel();
    let proxy = EgressProxy::start(parent.path(), "j3", policy(port, None), sender).unwrap();
    let connect = format!("CONNECT allowed.test:{port} HTTP/1.1\r\n\r\n");
    // The handshake sent with the CONNECT, and after the proxy's answer.
    for together in [true, false] {
        let mut stream = UnixStream::connect(proxy.socket()).await.unwrap();
        let hello = super::sni::tests::client_hello("evil.test");
        if together {
            stream
                .write_all(&[connect.as_bytes(), &hello].concat())
                .await
                .unwrap();
        } else {
            stream.write_all(connect.as_bytes()).await.unwrap();
            let mut answer = [0u8; 39];
            stream.read_exact(&mut answer).await.unwrap();
            assert!(answer.starts_with(b"HTTP/1.1 200"));
            stream.write_all(&hello).await.unwrap();
        }
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        assert!(!String::from_utf8_lossy(&rest).contains("hello"));
    }
    // A handshake for the tunnel's own name goes through.
    let mut stream = UnixStream::connect(proxy.socket()).await.unwrap();
    let hello = super::sni::tests::client_hello("allowed.test");
    stream
        .write_all(&[connect.as_bytes(), &hello].concat())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    assert!(String::from_utf8_lossy(&answer).ends_with("hello"));
    proxy.finish().await;
    let mut refused = 0;
    while let Ok(attempt) = attempts.try_recv() {
        if !attempt.allowed {
            refused += 1;
            assert!(attempt.reason.unwrap().contains("evil.test"));
        }
    }
    assert_eq!(refused, 2);
}

#[tokio::test]
async fn past_its_attempt_cap_a_job_is_refused_once_and_the_proxy_stops_listening() {
    let parent = tempfile::tempdir().unwrap();
    let (sender, mut attempts) = mpsc::unbounded_channel();
    let proxy = EgressProxy::start(parent.path(), "j4", policy(1, None), sender).unwrap();
    for _ in 0..MAX_ATTEMPTS {
        let answer = ask(&proxy, "CONNECT denied.test:1 HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    }
    // The one past the cap is dropped unanswered; after it, nothing is listening.
    let _ = ask(&proxy, "CONNECT denied.test:1 HTTP/1.1\r\n\r\n").await;
    let mut refused_later = false;
    for _ in 0..50 {
        if UnixStream::connect(proxy.socket()).await.is_err() {
            refused_later = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(refused_later, "the proxy still listens past its cap");
    let summary = proxy.finish().await;
    assert!(summary.too_many_attempts && !summary.over_limit);
    let mut count = 0;
    while attempts.try_recv().is_ok() {
        count += 1;
    }
    assert_eq!(count, MAX_ATTEMPTS + 1);
}
