//! This machine set up as a job host by `deploy/ssh-host/prepare.sh`, once per machine and
//! version of the scripts: a stamp under [`PREPARED_DIR`], taken under a lock, so concurrent
//! test processes wait for one run.

use std::collections::hash_map::DefaultHasher;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{Flock, FlockArg};

use super::{TEST_USER, keygen};

/// The host set-up under test.
const PREPARE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/ssh-host/prepare.sh");
/// The sandbox helper prepare.sh installs, and pid 1 of each sandbox.
const HELPER_SOURCES: [&str; 5] = [
    concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/ssh-host/sandbox"),
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/ssh-host/sandbox-init"
    ),
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/ssh-host/sandbox-session"
    ),
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/ssh-host/sandbox-init-session"
    ),
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/ssh-host/sandbox-serve"
    ),
];
/// The client key prepare.sh authorizes, and the stamps of its runs.
const PREPARED_DIR: &str = "/var/lib/openshell-test";

/// Runs deploy/ssh-host/prepare.sh for [`TEST_USER`] unless this version of it (and of the
/// sandbox helper) already ran on this machine; returns the authorized client key.
pub(super) fn ensure_prepared() -> PathBuf {
    std::fs::create_dir_all(PREPARED_DIR).expect("create the prepared-host directory");
    let lock = File::create(Path::new(PREPARED_DIR).join("prepare.lock")).expect("prepare lock");
    // Held until this function returns: one prepare.sh run at a time on this machine.
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, error)| panic!("lock {PREPARED_DIR}/prepare.lock: {error}"));
    let key = Path::new(PREPARED_DIR).join("client_key");
    if !key.exists() {
        keygen(&key);
    }
    let mut hasher = DefaultHasher::new();
    for file in std::iter::once(PREPARE).chain(HELPER_SOURCES) {
        std::fs::read(file)
            .unwrap_or_else(|error| panic!("read {file}: {error}"))
            .hash(&mut hasher);
    }
    std::fs::read(key.with_extension("pub"))
        .expect("client public key")
        .hash(&mut hasher);
    let stamp = Path::new(PREPARED_DIR).join(format!("prepared-{:016x}", hasher.finish()));
    if !stamp.exists() {
        let output = Command::new("bash")
            .arg(PREPARE)
            .arg("--pubkey")
            .arg(key.with_extension("pub"))
            .args(["--user", TEST_USER])
            .stdin(Stdio::null())
            .output()
            .expect("run deploy/ssh-host/prepare.sh");
        assert!(
            output.status.success(),
            "deploy/ssh-host/prepare.sh failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(&stamp, &output.stdout).expect("write the prepared stamp");
    }
    key
}
