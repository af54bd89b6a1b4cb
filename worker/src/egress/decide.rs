//! The proxy's one decision: may this job connect to this host and port, and to which
//! addresses. Names are resolved here, never in the sandbox, and an address the job could use
//! to reach the host's own services or a private network is refused unless a CIDR rule names it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use openshell_protocol::EgressRule;
use openshell_protocol::egress::{canonical, normalize};

/// What a job may reach: its granted rules, the operator's pinned names, its byte cap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// The rules the job was granted.
    pub rules: Vec<EgressRule>,
    /// Names the operator pinned to addresses (`network.resolve`): used instead of DNS, and
    /// trusted even when private, since the operator chose them.
    pub pins: BTreeMap<String, Vec<IpAddr>>,
    /// Bytes (both directions, all connections) the job may move; past it every connection
    /// is cut and the verdict is `network_limit`.
    pub max_bytes: Option<u64>,
}

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The host and port match no rule.
    #[error("{host}:{port} is not in the job's egress rules")]
    NotInRules {
        /// Host as asked.
        host: String,
        /// Port as asked.
        port: u16,
    },
    /// A raw IP address no CIDR rule names.
    #[error("raw address {0} is not in the job's egress rules (only CIDR rules allow addresses)")]
    RawAddress(IpAddr),
    /// The name resolves only to addresses that are refused (loopback, private, link-local...).
    #[error(
        "{host} resolves only to refused addresses ({addresses}): loopback, private, link-local and other non-public addresses need a CIDR rule"
    )]
    PrivateAddress {
        /// Host as asked.
        host: String,
        /// What it resolved to.
        addresses: String,
    },
    /// The name did not resolve.
    #[error("{host} does not resolve: {reason}")]
    Unresolved {
        /// Host as asked.
        host: String,
        /// The resolver's answer.
        reason: String,
    },
}

impl EgressPolicy {
    /// The addresses `host:port` may be reached at, or why not.
    pub async fn decide(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Denied> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            let ip = canonical(ip);
            return if self.by_cidr(ip, port) {
                Ok(vec![SocketAddr::new(ip, port)])
            } else {
                Err(Denied::RawAddress(ip))
            };
        }
        let name = normalize(bare);
        if !self.rules.iter().any(|rule| rule.allows_name(&name, port)) {
            return Err(Denied::NotInRules { host: name, port });
        }
        if let Some(pinned) = self.pins.get(&name) {
            return Ok(pinned.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        }
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
            .await
            .map_err(|error| Denied::Unresolved {
                host: name.clone(),
                reason: error.to_string(),
            })?
            .collect();
        let allowed: Vec<SocketAddr> = resolved
            .iter()
            .map(|address| SocketAddr::new(canonical(address.ip()), port))
            .filter(|address| is_public(address.ip()) || self.by_cidr(address.ip(), port))
            .collect();
        if allowed.is_empty() {
            return Err(Denied::PrivateAddress {
                host: name,
                addresses: resolved
                    .iter()
                    .map(|address| address.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(allowed)
    }

    fn by_cidr(&self, ip: IpAddr, port: u16) -> bool {
        self.rules.iter().any(|rule| rule.allows_address(ip, port))
    }
}

/// True for addresses on the public internet: not loopback, private, link-local (cloud
/// metadata at 169.254.169.254), shared, multicast, documentation or otherwise reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        || (first == 0x0064 && ip.segments()[1] == 0xff9b)
        || (ip.segments()[..6] == [0; 6] && !ip.is_loopback()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[&str]) -> EgressPolicy {
        EgressPolicy {
            rules: rules.iter().map(|rule| rule.parse().unwrap()).collect(),
            ..EgressPolicy::default()
        }
    }

    #[test]
    fn only_public_addresses_are_public() {
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
        ] {
            assert!(!is_public(refused.parse().unwrap()), "{refused} public");
        }
        for public in ["1.1.1.1", "151.101.0.223", "2a04:4e42::223"] {
            assert!(is_public(public.parse().unwrap()), "{public} refused");
        }
    }

    #[tokio::test]
    async fn names_need_a_rule_and_addresses_a_cidr_rule() {
        let policy = policy(&["allowed.test:8080", "10.0.0.0/8:5432"]);
        assert!(matches!(
            policy.decide("other.test", 8080).await,
            Err(Denied::NotInRules { .. })
        ));
        assert!(matches!(
            policy.decide("allowed.test", 8081).await,
            Err(Denied::NotInRules { .. })
        ));
        assert!(matches!(
            policy.decide("127.0.0.1", 8080).await,
            Err(Denied::RawAddress(_))
        ));
        assert!(matches!(
            policy.decide("[::ffff:169.254.169.254]", 80).await,
            Err(Denied::RawAddress(_))
        ));
        assert_eq!(
            policy.decide("10.2.3.4", 5432).await.unwrap(),
            ["10.2.3.4:5432".parse().unwrap()]
        );
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused_unless_pinned() {
        let mut policy = policy(&["localhost:8080", "pinned.test:8080"]);
        assert!(matches!(
            policy.decide("localhost", 8080).await,
            Err(Denied::PrivateAddress { .. })
        ));
        policy
            .pins
            .insert("pinned.test".into(), vec!["127.0.0.1".parse().unwrap()]);
        assert_eq!(
            policy.decide("PINNED.test.", 8080).await.unwrap(),
            ["127.0.0.1:8080".parse().unwrap()]
        );
    }
}
