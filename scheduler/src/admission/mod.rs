//! Admission: a request, a tenant and a pool's policy give the effective limits or a refusal.

use chrono::{DateTime, Utc};
use openshell_protocol::limits::LimitValue;
use openshell_protocol::{
    Enforcement, EnforcementReport, EnforcementStatus, ErrorKind, ExecRequest, LimitName, Limits,
};

pub use network::NetworkGrant;

use crate::deadline::check_deadline;
use crate::policy::PoolPolicy;
use crate::rejection::Rejection;

/// A job that may run: its effective limits and how the backend will enforce each.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    /// Request limits with the pool's defaults filled in, all within the ceilings.
    pub limits: Limits,
    /// For each limit in force, the backend's planned enforcement.
    pub enforcement: EnforcementReport,
    /// The network the job gets.
    pub network: NetworkGrant,
}

/// Checks `request` from `tenant` against `policy`, given what the backend can enforce.
///
/// Checks run in a fixed order (tenant, program, network, deadline, ceilings, enforcement) so
/// a request breaking several rules always gets the same answer.
pub fn admit(
    request: &ExecRequest,
    tenant: &str,
    policy: &PoolPolicy,
    capabilities: &EnforcementReport,
    now: DateTime<Utc>,
) -> Result<Admitted, Rejection> {
    check_tenant(tenant, policy)?;
    check_program(request, policy)?;
    let (network, network_entry) = network::grant(request, policy, capabilities)?;
    check_deadline(request.deadline, now)?;
    let limits = request.limits.or(&policy.defaults);
    check_ceilings(&limits, policy)?;
    let mut enforcement = plan_enforcement(&limits, policy, capabilities)?;
    match network_entry {
        Some(entry) => {
            enforcement.insert(LimitName::Network, entry);
        }
        None if network == NetworkGrant::None => {
            enforcement.insert(LimitName::Network, plan_network(policy, capabilities));
        }
        None => {}
    }
    if !request.outputs.is_empty() {
        enforcement.insert(LimitName::Files, plan_files(policy, capabilities)?);
    }
    Ok(Admitted {
        limits,
        enforcement,
        network,
    })
}

fn check_tenant(tenant: &str, policy: &PoolPolicy) -> Result<(), Rejection> {
    if policy.tenants.allows(tenant) {
        return Ok(());
    }
    Err(Rejection::new(
        ErrorKind::TenantNotAllowed,
        format!(
            "tenant `{tenant}` may not use pool `{}`; an operator can add it to the pool's `tenants`",
            policy.pool
        ),
    ))
}

fn check_program(request: &ExecRequest, policy: &PoolPolicy) -> Result<(), Rejection> {
    match &request.language {
        Some(language) if !policy.languages.contains(language) => Err(Rejection::new(
            ErrorKind::LanguageNotAllowed,
            format!(
                "pool `{}` does not run `{language}`; it runs: {}",
                policy.pool,
                policy
                    .languages
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        None if !policy.allow_commands => Err(Rejection::new(
            ErrorKind::LanguageNotAllowed,
            format!(
                "pool `{}` runs only `language` + `code` jobs, not explicit commands",
                policy.pool
            ),
        )),
        _ => Ok(()),
    }
}

fn check_ceilings(limits: &Limits, policy: &PoolPolicy) -> Result<(), Rejection> {
    for (name, value) in limits.iter() {
        let Some(ceiling) = policy.ceilings.get(name) else {
            continue;
        };
        if exceeds(value, ceiling) {
            return Err(Rejection::new(
                ErrorKind::LimitExceedsPolicy,
                format!(
                    "limits.{name} = {value} is above pool `{}`'s ceiling of {ceiling}; ask for at most {ceiling}",
                    policy.pool
                ),
            ));
        }
    }
    Ok(())
}

fn exceeds(value: LimitValue, ceiling: LimitValue) -> bool {
    value
        .partial_cmp(&ceiling)
        .is_none_or(|order| order.is_gt())
}

fn plan_enforcement(
    limits: &Limits,
    policy: &PoolPolicy,
    capabilities: &EnforcementReport,
) -> Result<EnforcementReport, Rejection> {
    let mut report = EnforcementReport::new();
    for (name, _) in limits.iter() {
        match capabilities.get(&name) {
            Some(plan) if plan.status != EnforcementStatus::NotEnforced => {
                report.insert(name, plan.clone());
            }
            _ if policy.allow_unenforced_limits => {
                let reason = format!("the {} backend cannot enforce {name}", policy.backend);
                report.insert(name, Enforcement::not_enforced(reason));
            }
            _ => {
                return Err(Rejection::new(
                    ErrorKind::LimitNotEnforceable,
                    format!(
                        "pool `{}` cannot enforce limits.{name} (backend {}), and it fails closed; drop the limit, \
                         use another pool, or have an operator set allow_unenforced_limits",
                        policy.pool, policy.backend
                    ),
                ));
            }
        }
    }
    Ok(report)
}

/// How a job without network access is cut off: the backend's way, or a `not_enforced` entry
/// saying that it shares the host's network. Never a refusal: backends without network
/// isolation (the local one without bubblewrap) still run jobs, and the report says so.
fn plan_network(policy: &PoolPolicy, capabilities: &EnforcementReport) -> Enforcement {
    match capabilities.get(&LimitName::Network) {
        Some(plan) if plan.status != EnforcementStatus::NotEnforced => plan.clone(),
        _ => Enforcement::not_enforced(format!(
            "the {} backend cannot cut the job off the network: it shares the network of the host it runs on",
            policy.backend
        )),
    }
}

/// How the files a request's `outputs` names are read out of the sandbox; a refusal when the
/// backend cannot return files (no pool setting makes that acceptable: nothing would come back).
fn plan_files(
    policy: &PoolPolicy,
    capabilities: &EnforcementReport,
) -> Result<Enforcement, Rejection> {
    match capabilities.get(&LimitName::Files) {
        Some(plan) if plan.status != EnforcementStatus::NotEnforced => Ok(plan.clone()),
        Some(refused) => Err(Rejection::new(
            ErrorKind::LimitNotEnforceable,
            format!(
                "the {} backend of pool `{}` cannot return files here ({}): drop `outputs`",
                policy.backend, policy.pool, refused.mechanism
            ),
        )),
        None => Err(Rejection::new(
            ErrorKind::LimitNotEnforceable,
            format!(
                "the {} backend of pool `{}` cannot return files: drop `outputs`, or use a pool whose \
                 backend can (docker, ssh, none)",
                policy.backend, policy.pool
            ),
        )),
    }
}

mod network;
#[cfg(test)]
mod tests;
