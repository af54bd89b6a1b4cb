//! A job's one way out when its pool holds it to egress rules: a Unix socket in a directory
//! the worker's egress proxy owns, mounted into the sandbox at [`SANDBOX_DIR`], and the small
//! forwarder (`forward.py`, written there by the worker) that makes the socket usable to jobs
//! that do not cooperate (and an HTTP proxy on 127.0.0.1:3128, in `HTTP_PROXY` and
//! `HTTPS_PROXY`, for those that do). The forwarder is a convenience running as the job's user; the policy
//! is the proxy's alone, outside the sandbox.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Where the egress directory appears inside the sandbox.
pub const SANDBOX_DIR: &str = "/run/openshell-egress";

/// The proxy's socket, inside the egress directory.
pub const SOCKET: &str = "egress.sock";

/// The forwarder, inside the egress directory.
pub const FORWARDER: &str = "forward.py";

/// The forwarder's source (Python 3, standard library only): run inside sandboxes as the
/// job's user; whoever makes an egress directory writes it there as [`FORWARDER`].
pub const FORWARDER_SOURCE: &str = include_str!("egress_forward.py");

/// A hosts file naming [`EgressEndpoint::hosts`], inside the egress directory, for sandboxes
/// that mount it over `/etc/hosts` (Docker gets the names as extra hosts instead).
pub const HOSTS: &str = "hosts";

/// The forwarder's configuration (JSON), inside the egress directory.
pub const FORWARDER_CONFIG: &str = "forward.json";

/// The egress endpoint of one job.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EgressEndpoint {
    /// The directory on the host holding [`SOCKET`], [`FORWARDER`] and [`FORWARDER_CONFIG`].
    pub dir: PathBuf,
    /// Names (with one port each) the forwarder serves transparently: each gets a loopback
    /// address of its own in the sandbox's `/etc/hosts` ([`EgressEndpoint::hosts`]).
    pub names: Vec<(String, u16)>,
}

impl EgressEndpoint {
    /// Each distinct name with its loopback address (127.77.x.y, in order of first mention).
    pub fn hosts(&self) -> Vec<(String, Ipv4Addr)> {
        let mut hosts: Vec<(String, Ipv4Addr)> = Vec::new();
        for (name, _) in &self.names {
            if hosts.iter().any(|(known, _)| known == name) {
                continue;
            }
            let index = u32::try_from(hosts.len() + 1).unwrap_or(u32::MAX) & 0xffff;
            let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 77, 0, 0)) | index);
            hosts.push((name.clone(), address));
        }
        hosts
    }

    /// Writes [`FORWARDER`] and its [`FORWARDER_CONFIG`] (the listeners of
    /// [`EgressEndpoint::hosts`]) into the directory, readable by the sandbox's user.
    pub fn write_forwarder(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let hosts = self.hosts();
        let listeners: Vec<String> = self
            .names
            .iter()
            .filter_map(|(name, port)| {
                let (_, address) = hosts.iter().find(|(known, _)| known == name)?;
                // Names are rule names: letters, digits, `-`, `_` and `.`, nothing to escape.
                Some(format!(
                    r#"{{"name":"{name}","port":{port},"address":"{address}"}}"#
                ))
            })
            .collect();
        let config = format!(r#"{{"listeners":[{}]}}"#, listeners.join(","));
        let mut hosts_file = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (name, address) in &hosts {
            hosts_file.push_str(&format!("{address} {name}\n"));
        }
        std::fs::write(self.dir.join(HOSTS), hosts_file)?;
        std::fs::write(self.dir.join(FORWARDER), FORWARDER_SOURCE)?;
        std::fs::write(self.dir.join(FORWARDER_CONFIG), config)?;
        for file in [FORWARDER, FORWARDER_CONFIG, HOSTS] {
            std::fs::set_permissions(self.dir.join(file), PermissionsExt::from_mode(0o644))?;
        }
        Ok(())
    }

    /// `argv` run under the forwarder, which sets the proxy environment and then runs it.
    pub fn wrap(argv: &[String]) -> Vec<String> {
        let mut wrapped = vec![
            "python3".to_string(),
            format!("{SANDBOX_DIR}/{FORWARDER}"),
            "--".to_string(),
        ];
        wrapped.extend(argv.iter().cloned());
        wrapped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_gets_one_loopback_address() {
        let endpoint = EgressEndpoint {
            dir: PathBuf::from("/x"),
            names: vec![
                ("a.test".into(), 80),
                ("b.test".into(), 443),
                ("a.test".into(), 443),
            ],
        };
        assert_eq!(
            endpoint.hosts(),
            [
                ("a.test".to_string(), Ipv4Addr::new(127, 77, 0, 1)),
                ("b.test".to_string(), Ipv4Addr::new(127, 77, 0, 2))
            ]
        );
        assert_eq!(
            EgressEndpoint::wrap(&["curl".into()]),
            ["python3", "/run/openshell-egress/forward.py", "--", "curl"]
        );
    }
}
