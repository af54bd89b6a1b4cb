//! `openshell health`: asks a local worker's HTTP endpoint whether it is live (or ready), for
//! container health checks. The worker image has no curl, and `openshell doctor` is too slow for
//! a probe (it checks every backend and creates a container), so this is one GET on loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::env;
use crate::metrics::server::{DEFAULT_ADDR, LIVE_PATH, READY_PATH};

/// Exit code when the worker did not answer 200 (or not at all).
const UNHEALTHY: u8 = 1;
/// The most of the answer read: a status line, headers and a one-line body.
const MAX_ANSWER: u64 = 4096;

/// Check a worker on this host: `/healthz` (live), or `/readyz` with `--ready`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  openshell health\n  openshell health --ready\n  openshell health --addr 127.0.0.1:9464 --timeout 1s\n\nExits 0 when the worker answers 200, 1 otherwise. A wildcard address (0.0.0.0, ::) is asked on loopback."
)]
pub struct HealthArgs {
    /// The worker's metrics address (env METRICS_ADDR).
    #[arg(long, env = env::METRICS_ADDR, default_value = DEFAULT_ADDR)]
    addr: SocketAddr,
    /// Ask whether it is ready (connected to NATS, serving, a backend healthy) rather than live.
    #[arg(long)]
    ready: bool,
    /// How long to wait for the answer.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Asks once and exits 0 on 200, 1 otherwise, saying why on stderr.
pub async fn run(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let addr = loopback_for(args.addr);
    let path = if args.ready { READY_PATH } else { LIVE_PATH };
    match tokio::time::timeout(args.timeout, get(addr, path)).await {
        Ok(Ok((200, body))) => {
            print!("{body}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ok((status, body))) => {
            eprintln!("openshell health: http://{addr}{path} answered {status}: {body}");
            Ok(ExitCode::from(UNHEALTHY))
        }
        Ok(Err(error)) => {
            eprintln!(
                "openshell health: http://{addr}{path}: {error}; is the worker running with METRICS_ADDR={addr}?"
            );
            Ok(ExitCode::from(UNHEALTHY))
        }
        Err(_) => {
            eprintln!(
                "openshell health: http://{addr}{path} did not answer within {:?}",
                args.timeout
            );
            Ok(ExitCode::from(UNHEALTHY))
        }
    }
}

/// The address to ask: a wildcard listen address is reached on loopback.
fn loopback_for(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// One HTTP/1.0 GET: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.take(MAX_ANSWER).read_to_string(&mut answer).await?;
    Ok(parse(&answer))
}

/// The status code and body of an HTTP answer; status 0 when it is not one.
fn parse(answer: &str) -> (u16, String) {
    let status = answer
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_address_is_asked_on_loopback() {
        let any: SocketAddr = "0.0.0.0:9464".parse().unwrap();
        assert_eq!(loopback_for(any), "127.0.0.1:9464".parse().unwrap());
        let any6: SocketAddr = "[::]:9464".parse().unwrap();
        assert_eq!(loopback_for(any6), "[::1]:9464".parse().unwrap());
        let given: SocketAddr = "10.0.0.5:9000".parse().unwrap();
        assert_eq!(loopback_for(given), given);
    }

    #[test]
    fn status_and_body_are_read_from_the_answer() {
        let answer = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 10\r\n\r\nnot ready\n";
        assert_eq!(parse(answer), (503, "not ready\n".to_string()));
        assert_eq!(parse("garbage"), (0, String::new()));
    }
}
