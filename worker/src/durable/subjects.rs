//! Durable-mode subjects, beside the core ones in `openshell_protocol::subjects`.
//!
//! | purpose | subject | stream |
//! |---|---|---|
//! | queued jobs | `<prefix>.jobs.<pool>.<tenant>` | `OPENSHELL_JOBS` |
//! | stored results | `<prefix>.results.<tenant>.<job_id>` | `OPENSHELL_RESULTS` |
//! | audit events | `<prefix>.audit.<tenant>.<pool>.<event>` | `OPENSHELL_AUDIT` |

/// Header naming a core subject that also gets the result once it is stored.
pub const REPLY_TO_HEADER: &str = "Openshell-Reply-To";

/// Builds and parses durable subjects under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableSubjects {
    prefix: String,
}

impl DurableSubjects {
    /// Subjects under `prefix` (e.g. `openshell`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// Where a job for `pool` as `tenant` is queued.
    pub fn job(&self, pool: &str, tenant: &str) -> String {
        format!("{}.jobs.{pool}.{tenant}", self.prefix)
    }

    /// The jobs of `pool` (the filter of its consumer).
    pub fn pool_jobs(&self, pool: &str) -> String {
        format!("{}.jobs.{pool}.*", self.prefix)
    }

    /// Every job subject (the jobs stream).
    pub fn all_jobs(&self) -> String {
        format!("{}.jobs.>", self.prefix)
    }

    /// The tenant of a job subject of `pool`, if it is one.
    pub fn parse_job<'a>(&self, pool: &str, subject: &'a str) -> Option<&'a str> {
        let tenant = subject
            .strip_prefix(&self.prefix)?
            .strip_prefix(".jobs.")?
            .strip_prefix(pool)?
            .strip_prefix('.')?;
        (!tenant.contains('.')).then_some(tenant)
    }

    /// Where the result of `job_id` of `tenant` is stored.
    pub fn result(&self, tenant: &str, job_id: &str) -> String {
        format!("{}.results.{tenant}.{job_id}", self.prefix)
    }

    /// Every result subject (the results stream).
    pub fn all_results(&self) -> String {
        format!("{}.results.>", self.prefix)
    }

    /// Every audit subject (the audit stream).
    pub fn all_audit(&self) -> String {
        format!("{}.audit.>", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses() {
        let subjects = DurableSubjects::new("openshell");
        assert_eq!(subjects.job("none", "acme"), "openshell.jobs.none.acme");
        assert_eq!(
            subjects.parse_job("none", "openshell.jobs.none.acme"),
            Some("acme")
        );
        assert_eq!(
            subjects.parse_job("none", "openshell.jobs.nonex.acme"),
            None
        );
        assert_eq!(subjects.parse_job("none", "openshell.jobs.none.a.b"), None);
        assert_eq!(subjects.result("acme", "j1"), "openshell.results.acme.j1");
    }
}
