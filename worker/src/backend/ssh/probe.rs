//! What a fresh connection learns about its host once: the remote uid, missing tools, the
//! user's hard rlimits, and whether the delegated cgroup is usable.

use std::collections::BTreeMap;
use std::time::Duration;

use super::channel;
use super::connect::SshHandle;
use super::error::SshError;
use super::script;

/// How long the probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A host as its probe found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostProbe {
    /// The remote user's uid.
    pub uid: Option<u32>,
    /// Tools the wrapper needs that are not on the remote PATH.
    pub missing: Vec<String>,
    /// Hard rlimits by prlimit resource name; absent means unlimited.
    pub hard: BTreeMap<String, u64>,
    /// The delegated cgroup is usable for jobs.
    pub cgroup: bool,
}

impl HostProbe {
    /// Parses the probe's `key=value` lines.
    pub fn parse(text: &str) -> Self {
        let mut probe = Self::default();
        for line in text.lines() {
            match line.split_once('=') {
                Some(("uid", uid)) => probe.uid = uid.trim().parse().ok(),
                Some(("missing", tool)) => probe.missing.push(tool.to_string()),
                Some(("hard", limit)) => {
                    if let Some((resource, value)) = limit.split_once('=')
                        && let Ok(value) = value.parse()
                    {
                        probe.hard.insert(resource.to_string(), value);
                    }
                }
                Some(("cgroup", state)) => probe.cgroup = state == "ok",
                _ => {}
            }
        }
        probe
    }

    /// Why jobs must not run on this host, if they must not.
    pub fn unfit(&self, require_cgroups: bool, cgroup_parent: Option<&str>) -> Option<String> {
        match self.uid {
            None => return Some("the probe could not read the remote uid (`id -u`)".into()),
            Some(0) => {
                return Some(
                    "the remote user is uid 0 (root); jobs never run as root: use the unprivileged user \
                     deploy/ssh-host/prepare.sh creates"
                        .into(),
                );
            }
            Some(_) => {}
        }
        if !self.missing.is_empty() {
            return Some(format!(
                "the job wrapper needs {} on the remote PATH (coreutils and util-linux); install them",
                self.missing.join(", ")
            ));
        }
        if require_cgroups && !self.cgroup {
            return Some(format!(
                "require_cgroups is set but the cgroup {} is not a writable cgroup v2 directory with the \
                 memory, cpu and pids controllers enabled for its children; run deploy/ssh-host/prepare.sh \
                 --cgroup on the host, or unset require_cgroups to accept rlimits only",
                cgroup_parent.unwrap_or("(none)")
            ));
        }
        None
    }
}

/// Runs the probe over `handle` and checks the host is fit for jobs.
pub async fn probe(
    handle: &SshHandle,
    addr: &str,
    cgroup_parent: Option<&str>,
    require_cgroups: bool,
) -> Result<HostProbe, SshError> {
    let command = script::probe_command(cgroup_parent);
    let output = channel::run(handle, &command, PROBE_TIMEOUT)
        .await
        .map_err(|cause| SshError::Lost {
            addr: addr.to_string(),
            cause: format!("probing the host failed: {cause}"),
        })?;
    let probe = HostProbe::parse(&String::from_utf8_lossy(&output.stdout));
    match probe.unfit(require_cgroups, cgroup_parent) {
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

    #[test]
    fn root_missing_tools_and_missing_cgroups_are_unfit() {
        let probe =
            HostProbe::parse("uid=1001\nhard=NOFILE=20000\nhard=AS=unlimited\ncgroup=unusable\n");
        assert_eq!(probe.uid, Some(1001));
        assert_eq!(probe.hard.get("NOFILE"), Some(&20000));
        assert!(!probe.hard.contains_key("AS"));
        assert_eq!(probe.unfit(false, None), None);
        assert!(probe.unfit(true, Some("/sys/fs/cgroup/x")).is_some());
        let root = HostProbe::parse("uid=0\n");
        assert!(root.unfit(false, None).unwrap().contains("root"));
        let bare = HostProbe::parse("uid=5\nmissing=prlimit\n");
        assert!(bare.unfit(false, None).unwrap().contains("prlimit"));
    }
}
