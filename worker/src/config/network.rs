//! A pool's `network` table: the egress rules its jobs are held to, through the worker's
//! egress proxy ([`crate::egress`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use openshell_protocol::egress::normalize;
use openshell_protocol::{ByteSize, EgressRule};
use serde::{Deserialize, Serialize};

use crate::egress::EgressPolicy;

/// `[pools.NAME.network]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Egress rules (`HOST:PORT`, see [`openshell_protocol::egress`]); a job with network gets
    /// these or the subset it asks for, and nothing else.
    pub allow: Vec<EgressRule>,
    /// Names pinned to addresses, resolved by the proxy without DNS. An operator's pin is
    /// trusted: a pinned private or loopback address is not refused.
    pub resolve: BTreeMap<String, IpAddr>,
    /// Bytes one job may move through the proxy (both directions, all its connections); past
    /// it, its connections are cut and its verdict is `network_limit`. Unset: no cap.
    pub max_bytes: Option<ByteSize>,
    /// Where per-job proxy directories (socket and forwarder) are made; the sandbox runtime
    /// must be able to mount them (for Docker: a path on the daemon's host).
    pub dir: PathBuf,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            resolve: BTreeMap::new(),
            max_bytes: None,
            dir: std::env::temp_dir().join("openshell-egress"),
        }
    }
}

impl NetworkConfig {
    /// Why this table is unusable for a pool that also has `allow_network`, if it is.
    pub fn problem(&self, allow_network: bool) -> Option<(&'static str, String)> {
        if !self.allow.is_empty() && allow_network {
            return Some((
                "allow_network",
                "a pool either grants its whole Docker network (allow_network) or holds jobs to \
                 network.allow, not both; drop one"
                    .into(),
            ));
        }
        if let Some(name) = self
            .resolve
            .keys()
            .find(|name| normalize(name) != **name || name.parse::<IpAddr>().is_ok())
        {
            return Some((
                "network.resolve",
                format!("`{name}` is not a lowercase host name without a trailing dot"),
            ));
        }
        if self.max_bytes.is_some_and(|max| max.bytes() == 0) {
            return Some((
                "network.max_bytes",
                "must be above 0; leave it out for no cap".into(),
            ));
        }
        if !self.dir.is_absolute() {
            return Some(("network.dir", "must be an absolute path".into()));
        }
        None
    }

    /// The proxy policy for a job granted `rules`.
    pub fn policy(&self, rules: Vec<EgressRule>) -> EgressPolicy {
        EgressPolicy {
            rules,
            pins: self
                .resolve
                .iter()
                .map(|(name, ip)| (name.clone(), vec![*ip]))
                .collect(),
            max_bytes: self.max_bytes.map(|max| max.bytes()),
        }
    }
}
