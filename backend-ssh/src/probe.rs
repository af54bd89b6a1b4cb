//! What a fresh connection learns about its host once, from `sandbox check` (the host's
//! sandbox helper, through sudo): the helper's protocol, the transport user's uid, the cgroup
//! controllers jobs get, the hard rlimits jobs inherit, and anything that keeps jobs off it.

use std::collections::BTreeMap;
use std::time::Duration;

use super::channel;
use super::connect::SshHandle;
use super::error::SshError;
use super::request::{self, PROTOCOL};
use super::verdict::Cgroups;

/// How long the probe may take (it starts a trial sandbox).
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// What to run on a host that fails the probe.
const PREPARE: &str = "run deploy/ssh-host/prepare.sh on the host (see deploy/ssh-host/README.md)";

/// A host as its probe found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostProbe {
    /// The helper's request format.
    pub version: Option<u32>,
    /// The transport user's uid, as sudo saw it.
    pub transport_uid: Option<u32>,
    /// The job uid pool, `first-last`.
    pub uids: Option<String>,
    /// Cgroup controllers jobs get.
    pub cgroups: Cgroups,
    /// Hard rlimits by prlimit resource name; absent means unlimited.
    pub hard: BTreeMap<String, u64>,
    /// The helper started a trial sandbox.
    pub sandbox_ok: bool,
    /// The helper has the resident runner (`sandbox serve`).
    pub serve: bool,
    /// What the helper says keeps jobs off this host.
    pub problems: Vec<String>,
}

impl HostProbe {
    /// Parses the helper's `key=value` lines.
    pub fn parse(text: &str) -> Self {
        let mut probe = Self::default();
        let (mut swap_limited, mut no_swap) = (false, false);
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "version" => probe.version = value.parse().ok(),
                "sudo_uid" => probe.transport_uid = value.parse().ok(),
                "uids" => probe.uids = Some(value.to_string()),
                "serve" => probe.serve = value == "1",
                "cgroup_memory" => probe.cgroups.memory = value != "none",
                "cgroup_pids" => probe.cgroups.pids = value != "none",
                "cgroup_cpu" => probe.cgroups.cpu = value != "none",
                "cgroup_cpuacct" => probe.cgroups.cpu_time = value != "none",
                "swap" => (swap_limited, no_swap) = (value == "limited", value == "none"),
                "hard" => {
                    if let Some((resource, value)) = value.split_once('=')
                        && let Ok(value) = value.parse()
                    {
                        probe.hard.insert(resource.to_string(), value);
                    }
                }
                "sandbox" => probe.sandbox_ok = value == "ok",
                "problem" => probe.problems.push(value.to_string()),
                _ => {}
            }
        }
        probe.cgroups.swap_bounded = no_swap || (probe.cgroups.memory && swap_limited);
        probe
    }

    /// Why jobs must not run on this host, if they must not.
    pub fn unfit(&self, require_cgroups: bool) -> Option<String> {
        match self.version {
            Some(PROTOCOL) => {}
            Some(other) => {
                return Some(format!(
                    "its sandbox helper speaks protocol {other}, this worker {PROTOCOL}: {PREPARE} from this worker's release"
                ));
            }
            None => return Some(format!("no sandbox helper answered: {PREPARE}")),
        }
        if self.transport_uid == Some(0) {
            return Some(
                "the transport user is uid 0 (root); jobs never run as root: use the unprivileged user \
                 deploy/ssh-host/prepare.sh creates"
                    .into(),
            );
        }
        if !self.problems.is_empty() {
            return Some(format!("{}; {PREPARE}", self.problems.join("; ")));
        }
        if !self.sandbox_ok {
            return Some(format!(
                "the sandbox helper did not start a trial sandbox: {PREPARE}"
            ));
        }
        if require_cgroups && !self.cgroups.complete() {
            return Some(format!(
                "require_cgroups is set but the host lacks a cgroup controller (memory {}, pids {}, cpu {}, \
                 CPU accounting {}); enable the missing controllers, or unset require_cgroups so that only \
                 the limits needing them are refused",
                yes_no(self.cgroups.memory),
                yes_no(self.cgroups.pids),
                yes_no(self.cgroups.cpu),
                yes_no(self.cgroups.cpu_time),
            ));
        }
        None
    }
}

fn yes_no(present: bool) -> &'static str {
    if present { "yes" } else { "no" }
}

/// Runs the probe over `handle` and checks the host is fit for jobs.
pub async fn probe(
    handle: &SshHandle,
    addr: &str,
    helper: &str,
    require_cgroups: bool,
) -> Result<HostProbe, SshError> {
    let output = channel::run(handle, &request::check_command(helper), PROBE_TIMEOUT)
        .await
        .map_err(|cause| SshError::Lost {
            addr: addr.to_string(),
            cause: format!("probing the host failed: {cause}"),
        })?;
    let probe = HostProbe::parse(&String::from_utf8_lossy(&output.stdout));
    let unfit = match probe.unfit(require_cgroups) {
        Some(cause) if probe.version.is_none() => Some(format!(
            "{cause} (`{}` exited with {}: {})",
            request::check_command(helper),
            output
                .status
                .map_or_else(|| "no status".to_string(), |status| status.to_string()),
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        other => other,
    };
    match unfit {
        Some(cause) => Err(SshError::HostUnfit {
            addr: addr.to_string(),
            cause,
        }),
        None => Ok(probe),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READY: &str = "version=1\nsudo_uid=999\nuids=61000-61063\ncgroup_memory=v1\ncgroup_pids=v1\n\
        cgroup_cpu=v2\ncgroup_cpuacct=v1\nswap=none\nhard=NOFILE=4096\nhard=AS=unlimited\nsandbox=ok\n";

    #[test]
    fn a_prepared_host_is_fit_and_its_cgroups_are_read() {
        let probe = HostProbe::parse(READY);
        assert_eq!(probe.unfit(true), None);
        assert_eq!(probe.cgroups, Cgroups::ALL);
        assert_eq!(probe.hard.get("NOFILE"), Some(&4096));
        assert!(!probe.hard.contains_key("AS"));
        let swapping = HostProbe::parse(&READY.replace("swap=none", "swap=unlimited"));
        assert!(!swapping.cgroups.swap_bounded);
        // A helper without the resident runner still runs every job with `sandbox run`.
        assert!(!probe.serve);
        assert!(HostProbe::parse(&format!("{READY}serve=1\n")).serve);
    }

    #[test]
    fn missing_helpers_problems_root_and_missing_cgroups_are_unfit() {
        let none = HostProbe::parse("");
        assert!(none.unfit(false).unwrap().contains("no sandbox helper"));
        let old = HostProbe::parse(&READY.replace("version=1", "version=0"));
        assert!(old.unfit(false).unwrap().contains("protocol 0"));
        let root = HostProbe::parse(&READY.replace("sudo_uid=999", "sudo_uid=0"));
        assert!(root.unfit(false).unwrap().contains("root"));
        let broken = HostProbe::parse(&format!("{READY}problem=bubblewrap is not installed\n"));
        assert!(broken.unfit(false).unwrap().contains("bubblewrap"));
        let bare = HostProbe::parse(&READY.replace("cgroup_pids=v1", "cgroup_pids=none"));
        assert_eq!(bare.unfit(false), None);
        assert!(bare.unfit(true).unwrap().contains("pids no"));
    }
}
