//! Real services for the integration tests, as guards: each starts the real binary on a port
//! it picks (or a private socket), owns its files in a temporary directory, and kills the
//! process on drop, even when the test fails.
//!
//! - [`nats`]: a `nats-server` with JetStream; [`nats::accounts`] the shipped multi-tenant one.
//! - [`dockerd`]: the host's Docker daemon (checked once) and a private `dockerd`.
//! - [`sshd`]: an OpenSSH server on this machine as `deploy/ssh-host/prepare.sh` sets it up.
//! - [`prometheus`]: a Prometheus scraping given targets.
//! - [`worker`]: the `openshell` binary under test, one CLI call or a long-running worker.
//! - [`jobs`], [`http`], [`process`]: jobs for a backend, a tiny HTTP GET, `/proc` lookups.
//! - [`yaml`]: YAML files (compose, Kubernetes, Prometheus) as JSON values.
//!
//! A missing service is a skip with a message (the constructor returns `None`), except under
//! `CI=true`, where it is a failure: [`in_ci`].

pub mod dockerd;
pub mod http;
pub mod jobs;
pub mod nats;
pub mod process;
pub mod prometheus;
pub mod sshd;
pub mod worker;
pub mod yaml;

pub use worker::{Openshell, WorkerProcess};

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;

/// Returns a loopback TCP port that was free a moment ago, for servers that cannot pick
/// their own (sshd, prometheus); nats-server picks its own.
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

/// A tool on PATH, or `None` with a skip message naming `install`; under CI a missing tool
/// fails the test.
pub fn tool(name: &str, install: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        if in_ci() {
            panic!("{name} not found under CI: {install}");
        }
        eprintln!("SKIP: {name} not found ({install})");
    }
    found
}

/// The repository's root, where `Cargo.toml` of the workspace is.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The repository's `deploy/` directory.
pub fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy")
}
