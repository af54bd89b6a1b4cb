//! What network a request gets: none, its pool's whole network, or egress rules held by a
//! proxy; refused when it asks for more than the pool allows or the backend cannot hold it.

use openshell_protocol::{
    EgressRule, Enforcement, EnforcementReport, EnforcementStatus, ErrorKind, ExecRequest,
    LimitName, NetworkAccess,
};

use crate::policy::PoolPolicy;
use crate::rejection::Rejection;

/// The network a job was granted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NetworkGrant {
    /// No network at all (the default).
    #[default]
    None,
    /// The pool's whole network (`allow_network`, no egress rules).
    Pool,
    /// Only these egress rules, through the worker's egress proxy.
    Egress(Vec<EgressRule>),
}

/// The grant for `request` under `policy`, and the report's `network` entry for a job with
/// network (`None` for one without: the caller reports how it is cut off).
pub(super) fn grant(
    request: &ExecRequest,
    policy: &PoolPolicy,
    capabilities: &EnforcementReport,
) -> Result<(NetworkGrant, Option<Enforcement>), Rejection> {
    if !request.network.wanted() {
        return Ok((NetworkGrant::None, None));
    }
    if policy.egress.is_empty() {
        return match (&request.network, policy.allow_network) {
            (_, false) => Err(not_allowed(policy)),
            (NetworkAccess::All(_), true) => Ok((NetworkGrant::Pool, None)),
            (NetworkAccess::Only(_), true) => Err(Rejection::new(
                ErrorKind::LimitNotEnforceable,
                format!(
                    "pool `{}` grants its whole network or none, and cannot hold a job to a list of \
                     hosts; ask for `network: true`, or use a pool with `network = {{ allow = [...] }}`",
                    policy.pool
                ),
            )),
        };
    }
    let rules = match &request.network {
        NetworkAccess::All(_) => policy.egress.clone(),
        NetworkAccess::Only(asked) => {
            if let Some(beyond) = asked
                .iter()
                .find(|rule| !policy.egress.iter().any(|pool| rule.within(pool)))
            {
                return Err(Rejection::new(
                    ErrorKind::NetworkNotAllowed,
                    format!(
                        "network rule `{beyond}` is not within pool `{}`'s egress rules ({}); ask for \
                         a subset of them",
                        policy.pool,
                        list(&policy.egress)
                    ),
                ));
            }
            asked.clone()
        }
    };
    let plan = match capabilities.get(&LimitName::Egress) {
        Some(plan) if plan.status != EnforcementStatus::NotEnforced => plan.clone(),
        _ => {
            return Err(Rejection::new(
                ErrorKind::LimitNotEnforceable,
                format!(
                    "the {} backend of pool `{}` cannot hold a job to egress rules, and the pool \
                     fails closed; drop `network`, or use a pool whose backend can (docker)",
                    policy.backend, policy.pool
                ),
            ));
        }
    };
    let entry = Enforcement {
        status: plan.status,
        mechanism: format!("{}; allowed: {}", plan.mechanism, list(&rules)),
    };
    Ok((NetworkGrant::Egress(rules), Some(entry)))
}

fn not_allowed(policy: &PoolPolicy) -> Rejection {
    Rejection::new(
        ErrorKind::NetworkNotAllowed,
        format!(
            "pool `{}` does not allow network access; drop `network` or use a pool that allows it",
            policy.pool
        ),
    )
}

fn list(rules: &[EgressRule]) -> String {
    rules
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
