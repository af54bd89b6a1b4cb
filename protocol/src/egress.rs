//! Egress rules: which destinations a job with network access may reach.
//!
//! A rule is `HOST:PORT`. `HOST` is a name (`pypi.org`), a wildcard over a name's subdomains
//! (`*.internal.example`: `a.internal.example`, `b.a.internal.example`, not
//! `internal.example` itself), an IP address (`10.1.2.3`, `[2001:db8::1]`) or a CIDR block
//! (`10.0.0.0/8`, `[2001:db8::/32]`). `PORT` is a number, a range (`8000-8100`) or `*`.
//! Names are compared in lowercase without a trailing dot. Pools list rules in
//! `network = { allow = [...] }`; a request names a subset of them (see [`NetworkAccess`]).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The destinations a rule's host part matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Exactly this name.
    Name(String),
    /// Any name strictly below this suffix (`*.example.com` holds `example.com`).
    Subdomains(String),
    /// Addresses in this block (an address alone is a block of one).
    Block {
        /// First address of the block.
        network: IpAddr,
        /// Prefix length in bits.
        prefix: u8,
    },
}

/// One egress rule, `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(
    with = "String",
    description = "`HOST:PORT`: a name, `*.suffix`, an IP or a CIDR block; a port, `LOW-HIGH` or `*`"
)]
pub struct EgressRule {
    /// Which hosts.
    pub host: HostPattern,
    /// Lowest port allowed.
    pub port_low: u16,
    /// Highest port allowed.
    pub port_high: u16,
}

/// Why a rule does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "egress rule `{rule}`: {reason}; write HOST:PORT, e.g. pypi.org:443, *.example.com:443, 10.0.0.0/8:5432"
)]
pub struct EgressRuleError {
    /// The rule as written.
    pub rule: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for EgressRule {
    type Err = EgressRuleError;

    fn from_str(rule: &str) -> Result<Self, Self::Err> {
        let bad = |reason| EgressRuleError {
            rule: rule.to_string(),
            reason,
        };
        let (host, port) = rule.rsplit_once(':').ok_or_else(|| bad("no `:PORT`"))?;
        let (port_low, port_high) = parse_ports(port).ok_or_else(|| bad("bad port"))?;
        let host = parse_host(host).ok_or_else(|| bad("bad host"))?;
        Ok(Self {
            host,
            port_low,
            port_high,
        })
    }
}

fn parse_ports(port: &str) -> Option<(u16, u16)> {
    if port == "*" {
        return Some((1, u16::MAX));
    }
    let (low, high) = port.split_once('-').unwrap_or((port, port));
    let (low, high): (u16, u16) = (low.parse().ok()?, high.parse().ok()?);
    (low >= 1 && low <= high).then_some((low, high))
}

fn parse_host(host: &str) -> Option<HostPattern> {
    let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let (address, prefix) = match bracketed.unwrap_or(host).split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (bracketed.unwrap_or(host), None),
    };
    if let Ok(ip) = address.parse::<IpAddr>() {
        if ip.is_ipv6() && bracketed.is_none() {
            return None;
        }
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().ok().filter(|p| *p <= bits)?,
            None => bits,
        };
        let network = mask(ip, prefix);
        return (network == ip).then_some(HostPattern::Block { network, prefix });
    }
    if bracketed.is_some() || prefix.is_some() {
        return None;
    }
    let name = normalize(host);
    match name.strip_prefix("*.") {
        Some(suffix) if valid_name(suffix) => Some(HostPattern::Subdomains(suffix.to_string())),
        Some(_) => None,
        None => valid_name(&name).then_some(HostPattern::Name(name)),
    }
}

/// A name as rules compare it: lowercase, no trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && name.parse::<IpAddr>().is_err()
}

/// `ip` with all but its first `prefix` bits cleared.
pub fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & kept).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & kept).into())
        }
    }
}

impl EgressRule {
    /// True when the rule allows `port`.
    pub fn allows_port(&self, port: u16) -> bool {
        (self.port_low..=self.port_high).contains(&port)
    }

    /// True when the rule allows the name `name` (already [`normalize`]d) at `port`.
    pub fn allows_name(&self, name: &str, port: u16) -> bool {
        self.allows_port(port)
            && match &self.host {
                HostPattern::Name(exact) => exact == name,
                HostPattern::Subdomains(suffix) => name
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                HostPattern::Block { .. } => false,
            }
    }

    /// True when the rule allows the address `ip` at `port` (CIDR and address rules only).
    pub fn allows_address(&self, ip: IpAddr, port: u16) -> bool {
        let ip = canonical(ip);
        self.allows_port(port)
            && match self.host {
                HostPattern::Block { network, prefix } => {
                    network.is_ipv4() == ip.is_ipv4() && mask(ip, prefix) == network
                }
                _ => false,
            }
    }

    /// True when every destination this rule allows, `other` allows too.
    pub fn within(&self, other: &EgressRule) -> bool {
        let ports = other.port_low <= self.port_low && self.port_high <= other.port_high;
        ports
            && match (&self.host, &other.host) {
                (HostPattern::Name(name), _) => other.allows_name(name, self.port_low),
                (HostPattern::Subdomains(mine), HostPattern::Subdomains(theirs)) => {
                    mine == theirs
                        || mine
                            .strip_suffix(theirs.as_str())
                            .is_some_and(|head| head.ends_with('.'))
                }
                (
                    HostPattern::Block { network, prefix },
                    HostPattern::Block {
                        network: outer,
                        prefix: outer_prefix,
                    },
                ) => {
                    prefix >= outer_prefix
                        && network.is_ipv4() == outer.is_ipv4()
                        && mask(*network, *outer_prefix) == *outer
                }
                _ => false,
            }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Name(name) => f.write_str(name)?,
            HostPattern::Subdomains(suffix) => write!(f, "*.{suffix}")?,
            HostPattern::Block { network, prefix } => {
                let full = if network.is_ipv4() { 32 } else { 128 };
                let text = if *prefix == full {
                    network.to_string()
                } else {
                    format!("{network}/{prefix}")
                };
                if network.is_ipv6() {
                    write!(f, "[{text}]")?;
                } else {
                    f.write_str(&text)?;
                }
            }
        }
        match (self.port_low, self.port_high) {
            (1, u16::MAX) => f.write_str(":*"),
            (low, high) if low == high => write!(f, ":{low}"),
            (low, high) => write!(f, ":{low}-{high}"),
        }
    }
}

impl Serialize for EgressRule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EgressRule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What a request asks of the network: nothing (`false`, the default), everything its pool
/// allows (`true`), or some of the pool's rules (a list, each within one rule of the pool).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum NetworkAccess {
    /// `false`: no network; `true`: all the pool allows.
    All(bool),
    /// Only these destinations.
    Only(Vec<EgressRule>),
}

/// Read by hand rather than as an untagged enum: no buffering of the value (a small stack
/// holds), and a wrong type is named as such at `network`.
impl<'de> Deserialize<'de> for NetworkAccess {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AccessVisitor;

        impl<'de> serde::de::Visitor<'de> for AccessVisitor {
            type Value = NetworkAccess;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false, or a list of egress rules such as [\"pypi.org:443\"]")
            }
            fn visit_bool<E: serde::de::Error>(self, wanted: bool) -> Result<Self::Value, E> {
                Ok(NetworkAccess::All(wanted))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut rules = Vec::new();
                while let Some(rule) = seq.next_element::<EgressRule>()? {
                    rules.push(rule);
                }
                Ok(NetworkAccess::Only(rules))
            }
        }

        deserializer.deserialize_any(AccessVisitor)
    }
}

impl Default for NetworkAccess {
    fn default() -> Self {
        NetworkAccess::All(false)
    }
}

impl From<bool> for NetworkAccess {
    fn from(wanted: bool) -> Self {
        NetworkAccess::All(wanted)
    }
}

impl NetworkAccess {
    /// True when the request asks for any network access.
    pub fn wanted(&self) -> bool {
        match self {
            NetworkAccess::All(wanted) => *wanted,
            NetworkAccess::Only(rules) => !rules.is_empty(),
        }
    }

    /// True for the default, no network (skipped on the wire).
    pub fn is_none(&self) -> bool {
        !self.wanted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> EgressRule {
        text.parse().unwrap()
    }

    #[test]
    fn rules_parse_and_print_back() {
        for text in [
            "pypi.org:443",
            "*.internal.example:443",
            "10.0.0.0/8:5432",
            "10.1.2.3:80",
            "[2001:db8::/32]:443",
            "[::1]:8080",
            "example.com:8000-8100",
            "example.com:*",
        ] {
            assert_eq!(rule(text).to_string(), text);
        }
        assert_eq!(rule("PyPI.org.:443").to_string(), "pypi.org:443");
    }

    #[test]
    fn bad_rules_are_refused() {
        for text in [
            "pypi.org",
            "pypi.org:0",
            "pypi.org:70000",
            "pypi.org:9-8",
            ":443",
            "*:443",
            "*.:443",
            "a..b:443",
            "10.0.0.1/8:80",
            "10.0.0.0/33:80",
            "::1:80",
            "[name]:80",
            "bad host:80",
            "a/8:80",
        ] {
            assert!(text.parse::<EgressRule>().is_err(), "{text} accepted");
        }
    }

    #[test]
    fn names_wildcards_and_blocks_match_what_they_say() {
        assert!(rule("pypi.org:443").allows_name("pypi.org", 443));
        assert!(!rule("pypi.org:443").allows_name("pypi.org", 80));
        assert!(!rule("pypi.org:443").allows_name("evil-pypi.org", 443));
        let wild = rule("*.example.com:443");
        assert!(wild.allows_name("a.example.com", 443));
        assert!(wild.allows_name("b.a.example.com", 443));
        assert!(!wild.allows_name("example.com", 443));
        assert!(!wild.allows_name("badexample.com", 443));
        let block = rule("10.0.0.0/8:5432");
        assert!(block.allows_address("10.9.8.7".parse().unwrap(), 5432));
        assert!(block.allows_address("::ffff:10.9.8.7".parse().unwrap(), 5432));
        assert!(!block.allows_address("11.0.0.1".parse().unwrap(), 5432));
        assert!(!block.allows_name("10.9.8.7", 5432));
    }

    #[test]
    fn a_subset_is_within_and_more_is_not() {
        let pool = rule("*.example.com:443");
        assert!(rule("a.example.com:443").within(&pool));
        assert!(rule("*.a.example.com:443").within(&pool));
        assert!(!rule("example.com:443").within(&pool));
        assert!(!rule("a.example.com:80").within(&pool));
        assert!(rule("10.1.0.0/16:5432").within(&rule("10.0.0.0/8:5432")));
        assert!(!rule("10.0.0.0/7:5432").within(&rule("10.0.0.0/8:5432")));
        assert!(rule("x.org:8001-8002").within(&rule("x.org:8000-8100")));
        assert!(!rule("x.org:*").within(&rule("x.org:8000-8100")));
    }

    #[test]
    fn network_access_reads_a_flag_or_a_list() {
        let read = |json: &str| serde_json::from_str::<NetworkAccess>(json).unwrap();
        assert!(read("true").wanted());
        assert!(!read("false").wanted());
        assert_eq!(
            read(r#"["pypi.org:443"]"#),
            NetworkAccess::Only(vec![rule("pypi.org:443")])
        );
        assert!(serde_json::from_str::<NetworkAccess>(r#"["pypi.org"]"#).is_err());
    }
}
