//! Per-tenant concurrency quotas: how many jobs one tenant may run at once in a pool on one
//! worker, so that a tenant with a deep queue cannot take every slot.

use std::collections::BTreeMap;

/// A pool's tenant quotas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantQuotas {
    /// Quota of tenants without their own (`None`: no quota).
    pub default: Option<usize>,
    /// Quotas of named tenants, overriding the default (0 means no quota for that tenant).
    pub tenants: BTreeMap<String, usize>,
}

impl TenantQuotas {
    /// Quotas with one default for every tenant (0: no quota).
    pub fn uniform(quota: usize) -> Self {
        Self {
            default: (quota > 0).then_some(quota),
            tenants: BTreeMap::new(),
        }
    }

    /// The most jobs `tenant` may run at once, or `None` for no quota.
    pub fn limit(&self, tenant: &str) -> Option<usize> {
        match self.tenants.get(tenant) {
            Some(0) => None,
            Some(quota) => Some(*quota),
            None => self.default,
        }
    }

    /// True when `tenant`, running `running` jobs, may start one more.
    pub fn allows(&self, tenant: &str, running: usize) -> bool {
        self.limit(tenant).is_none_or(|quota| running < quota)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_tenants_override_the_default() {
        let mut quotas = TenantQuotas::uniform(2);
        quotas.tenants.insert("big".into(), 5);
        quotas.tenants.insert("free".into(), 0);
        assert_eq!(quotas.limit("anyone"), Some(2));
        assert_eq!(quotas.limit("big"), Some(5));
        assert_eq!(quotas.limit("free"), None);
        assert!(quotas.allows("anyone", 1));
        assert!(!quotas.allows("anyone", 2));
        assert!(quotas.allows("free", 1000));
        assert_eq!(TenantQuotas::uniform(0).limit("x"), None);
    }
}
