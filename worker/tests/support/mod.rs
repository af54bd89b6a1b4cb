//! Real services for integration tests: a `nats-server` on a free port and the
//! `openshell` binary as a child process. Include with `mod support;`.

// Each test crate uses only part of this module.
#![allow(dead_code)]

pub mod dockerd;
pub mod jobs;
pub mod nats;
pub mod sshd;
pub mod worker;

use std::ffi::OsStr;
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Output, Stdio};

use tokio::process::Command;

/// Variables passed through from the test's environment; everything else is the caller's.
const KEPT_ENV: &[&str] = &["PATH", "HOME", "TMPDIR", "RUST_BACKTRACE"];

/// Returns a loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local address of probe socket")
        .port()
}

/// True when running under CI, where a missing service is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| matches!(v.as_str(), "true" | "1"))
}

/// Runs the `openshell` CLI once with `args` and `envs`, and returns its output.
pub async fn cli<I, S>(args: I, envs: &[(&str, &str)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    command(args, envs)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run openshell")
}

/// The `openshell` binary with a near-empty environment plus `envs`.
fn command<I, S>(args: I, envs: &[(&str, &str)]) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_openshell"));
    cmd.args(args).env_clear();
    for key in KEPT_ENV {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    cmd.envs(envs.iter().copied());
    cmd
}
