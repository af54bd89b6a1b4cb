//! What a pool allows.

use std::collections::BTreeSet;

use openshell_protocol::{EgressRule, Limits};
use serde::{Deserialize, Serialize};

/// Which tenants may use a pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<String>", into = "Vec<String>")]
pub enum TenantFilter {
    /// Every tenant (written `["*"]`).
    #[default]
    Any,
    /// Only these tenants.
    Only(BTreeSet<String>),
}

impl From<Vec<String>> for TenantFilter {
    fn from(names: Vec<String>) -> Self {
        if names.iter().any(|name| name == "*") {
            TenantFilter::Any
        } else {
            TenantFilter::Only(names.into_iter().collect())
        }
    }
}

impl From<TenantFilter> for Vec<String> {
    fn from(filter: TenantFilter) -> Self {
        match filter {
            TenantFilter::Any => vec!["*".to_string()],
            TenantFilter::Only(names) => names.into_iter().collect(),
        }
    }
}

impl TenantFilter {
    /// True when `tenant` may use the pool.
    pub fn allows(&self, tenant: &str) -> bool {
        match self {
            TenantFilter::Any => true,
            TenantFilter::Only(names) => names.contains(tenant),
        }
    }
}

/// A pool's admission policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolPolicy {
    /// Pool name, for messages.
    pub pool: String,
    /// Backend kind, for messages.
    pub backend: String,
    /// Limits applied where a request sets none.
    pub defaults: Limits,
    /// Highest limits a request may ask for; unset means no ceiling for that limit.
    pub ceilings: Limits,
    /// Tenants allowed.
    pub tenants: TenantFilter,
    /// Languages the pool runs.
    pub languages: BTreeSet<String>,
    /// Whether explicit `command` requests are allowed.
    pub allow_commands: bool,
    /// Whether a request may ask for network access (the pool's whole network).
    pub allow_network: bool,
    /// Egress rules a job with network access is held to, through the worker's egress proxy;
    /// when set, they are all the network a job can get.
    pub egress: Vec<EgressRule>,
    /// Whether limits the backend cannot enforce are accepted (and reported as not enforced)
    /// instead of failing the job closed.
    pub allow_unenforced_limits: bool,
}
