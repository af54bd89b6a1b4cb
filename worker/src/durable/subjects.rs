//! Durable-mode subjects, beside the core ones in `openshell_protocol::subjects`.
//!
//! | purpose | subject | stream |
//! |---|---|---|
//! | queued jobs | `<prefix>.jobs.<pool>.<tenant>.<job_id>` | `OPENSHELL_JOBS` |
//! | stored results | `<prefix>.results.<tenant>.<job_id>` | `OPENSHELL_RESULTS` |
//! | audit events | `<prefix>.audit.<tenant>.<pool>.<event>` | `OPENSHELL_AUDIT` |
//!
//! A queued job's identity is its subject: NATS permissions pin an agent to its tenant's
//! subjects, and the jobs stream keeps one message per subject, so no tenant can make another
//! tenant's submission a duplicate (a `Nats-Msg-Id` header could: it is stream-wide).

use openshell_protocol::Subjects;

/// Header naming a core subject that also gets the result once it is stored.
pub const REPLY_TO_HEADER: &str = "Openshell-Reply-To";

/// What a message on a pool's job subjects names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobSubject<'a> {
    /// `<prefix>.jobs.<pool>.<tenant>.<job_id>`.
    Job {
        /// The tenant.
        tenant: &'a str,
        /// The job id.
        id: &'a str,
    },
    /// `<prefix>.jobs.<pool>.<tenant>`, the form before job ids were in the subject.
    WithoutId {
        /// The tenant.
        tenant: &'a str,
    },
}

/// Builds and parses durable subjects under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableSubjects {
    core: Subjects,
}

impl DurableSubjects {
    /// Subjects under `prefix` (e.g. `openshell`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            core: Subjects::new(prefix),
        }
    }

    /// Where job `id` for `pool` as `tenant` is queued.
    pub fn job(&self, pool: &str, tenant: &str, id: &str) -> String {
        format!("{}.jobs.{pool}.{tenant}.{id}", self.core.prefix())
    }

    /// The jobs of `pool` (the filter of its consumer; it also catches the old form without an
    /// id, so that such a job is answered instead of waiting forever).
    pub fn pool_jobs(&self, pool: &str) -> String {
        format!("{}.jobs.{pool}.>", self.core.prefix())
    }

    /// Every job subject (the jobs stream).
    pub fn all_jobs(&self) -> String {
        format!("{}.jobs.>", self.core.prefix())
    }

    /// What a job subject of `pool` names, if it is one.
    pub fn parse_job<'a>(&self, pool: &str, subject: &'a str) -> Option<JobSubject<'a>> {
        let rest = subject
            .strip_prefix(self.core.prefix())?
            .strip_prefix(".jobs.")?
            .strip_prefix(pool)?
            .strip_prefix('.')?;
        match rest.split_once('.') {
            None => Some(JobSubject::WithoutId { tenant: rest }),
            Some((tenant, id)) if !id.contains('.') => Some(JobSubject::Job { tenant, id }),
            Some(_) => None,
        }
    }

    /// Where the result of `job_id` of `tenant` is stored.
    pub fn result(&self, tenant: &str, job_id: &str) -> String {
        self.core.result(tenant, job_id)
    }

    /// Every result subject (the results stream).
    pub fn all_results(&self) -> String {
        format!("{}.results.>", self.core.prefix())
    }

    /// Every audit subject (the audit stream).
    pub fn all_audit(&self) -> String {
        self.core.audit_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses() {
        let subjects = DurableSubjects::new("openshell");
        assert_eq!(
            subjects.job("none", "acme", "j1"),
            "openshell.jobs.none.acme.j1"
        );
        assert_eq!(
            subjects.parse_job("none", "openshell.jobs.none.acme.j1"),
            Some(JobSubject::Job {
                tenant: "acme",
                id: "j1"
            })
        );
        assert_eq!(
            subjects.parse_job("none", "openshell.jobs.none.acme"),
            Some(JobSubject::WithoutId { tenant: "acme" })
        );
        assert_eq!(
            subjects.parse_job("none", "openshell.jobs.nonex.acme.j1"),
            None
        );
        assert_eq!(
            subjects.parse_job("none", "openshell.jobs.none.a.b.c"),
            None
        );
        assert_eq!(subjects.result("acme", "j1"), "openshell.results.acme.j1");
    }
}
