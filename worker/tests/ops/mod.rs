//! Helpers of the operations tests: a tiny HTTP GET, the worker's metrics address, tool lookup,
//! and a throw-away Prometheus server. Include with `mod ops;` next to `mod support;`.

#![allow(dead_code)]

pub mod accounts;
pub mod prometheus;

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET http://addr/path` with `accept`; returns the status code and the body.
pub async fn http_get(addr: &str, path: &str, accept: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|error| panic!("connect to {addr}: {error}"));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("response within 10s")
        .expect("read response");
    let response = String::from_utf8_lossy(&response).to_string();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    let chunked = response
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (status, if chunked { dechunk(&body) } else { body })
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}

/// The metrics address the worker logged ("metrics on http://ADDR/metrics").
pub fn metrics_addr(logs: &str) -> String {
    logs.lines()
        .find_map(|line| {
            let start = line.find("metrics on http://")? + "metrics on http://".len();
            let rest = &line[start..];
            Some(rest[..rest.find("/metrics")?].to_string())
        })
        .unwrap_or_else(|| panic!("worker did not log its metrics address:\n{logs}"))
}

/// A tool on PATH, or `None` with a skip message; under CI a missing tool fails the test.
pub fn tool(name: &str, install: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| matches!(v.as_str(), "true" | "1")) {
            panic!("{name} not found under CI: {install}");
        }
        eprintln!("SKIP: {name} not found ({install})");
    }
    found
}

/// The repository's `deploy/` directory.
pub fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}
