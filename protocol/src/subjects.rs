//! The NATS subject scheme.
//!
//! | purpose      | subject                                   |
//! |--------------|-------------------------------------------|
//! | requests     | `<prefix>.exec.<pool>.<tenant>`           |
//! | audit events | `<prefix>.audit.<tenant>.<pool>.<event>`  |
//! | cancellation | `<prefix>.cancel.<tenant>.<job_id>`       |
//!
//! The tenant is taken from the subject, never from the payload, so NATS permissions can pin
//! each agent to its own tenant. Workers of a pool share the queue group `<prefix>.workers.<pool>`.

use crate::audit::AuditEventType;

/// Default subject prefix.
pub const DEFAULT_PREFIX: &str = "openshell";

/// Longest pool, tenant or job id token accepted.
pub const MAX_TOKEN_LEN: usize = 128;

/// Builds and parses OpenShell subjects under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

/// Why a name cannot be used as a subject token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} `{value}` is not valid: use 1 to {MAX_TOKEN_LEN} of A-Z a-z 0-9 _ -")]
pub struct TokenError {
    /// What the token names (pool, tenant, job id).
    pub what: &'static str,
    /// The offending value.
    pub value: String,
}

/// Checks that `value` is a safe single subject token: `[A-Za-z0-9_-]{1,128}`.
pub fn check_token(what: &'static str, value: &str) -> Result<(), TokenError> {
    let valid = !value.is_empty()
        && value.len() <= MAX_TOKEN_LEN
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if valid {
        Ok(())
    } else {
        Err(TokenError {
            what,
            value: value.chars().take(MAX_TOKEN_LEN + 8).collect(),
        })
    }
}

impl Subjects {
    /// Subjects under `prefix` (dot-separated tokens, e.g. `openshell` or `acme.openshell`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where agents publish requests for `pool` as `tenant`.
    pub fn exec(&self, pool: &str, tenant: &str) -> String {
        format!("{}.exec.{pool}.{tenant}", self.prefix)
    }

    /// What the workers of `pool` subscribe to.
    pub fn exec_wildcard(&self, pool: &str) -> String {
        format!("{}.exec.{pool}.*", self.prefix)
    }

    /// Queue group shared by the workers of `pool`.
    pub fn queue_group(&self, pool: &str) -> String {
        format!("{}.workers.{pool}", self.prefix)
    }

    /// The `(pool, tenant)` of a request subject, if it is one.
    pub fn parse_exec<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".exec.")?;
        let (pool, tenant) = rest.split_once('.')?;
        (!tenant.contains('.')).then_some((pool, tenant))
    }

    /// Where an audit event of `event` for `tenant` in `pool` goes.
    pub fn audit(&self, tenant: &str, pool: &str, event: AuditEventType) -> String {
        format!("{}.audit.{tenant}.{pool}.{event}", self.prefix)
    }

    /// Every audit event.
    pub fn audit_all(&self) -> String {
        format!("{}.audit.>", self.prefix)
    }

    /// Where a client cancels job `job_id` of `tenant`.
    pub fn cancel(&self, tenant: &str, job_id: &str) -> String {
        format!("{}.cancel.{tenant}.{job_id}", self.prefix)
    }

    /// What workers subscribe to for cancellations.
    pub fn cancel_all(&self) -> String {
        format!("{}.cancel.*.*", self.prefix)
    }

    /// The `(tenant, job_id)` of a cancel subject, if it is one.
    pub fn parse_cancel<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = subject
            .strip_prefix(&self.prefix)?
            .strip_prefix(".cancel.")?;
        let (tenant, job_id) = rest.split_once('.')?;
        (!job_id.contains('.')).then_some((tenant, job_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses() {
        let subjects = Subjects::default();
        assert_eq!(
            subjects.exec("docker", "acme"),
            "openshell.exec.docker.acme"
        );
        assert_eq!(
            subjects.parse_exec("openshell.exec.docker.acme"),
            Some(("docker", "acme"))
        );
        assert_eq!(subjects.parse_exec("openshell.exec.docker.a.b"), None);
        assert_eq!(subjects.parse_exec("other.exec.docker.acme"), None);
        assert_eq!(
            subjects.audit("acme", "docker", AuditEventType::Finished),
            "openshell.audit.acme.docker.finished"
        );
        assert_eq!(
            subjects.parse_cancel("openshell.cancel.acme.job-1"),
            Some(("acme", "job-1"))
        );
        assert_eq!(Subjects::new("x.y").exec("p", "t"), "x.y.exec.p.t");
    }

    #[test]
    fn tokens_are_checked() {
        assert!(check_token("tenant", "acme-01_x").is_ok());
        assert!(check_token("tenant", "").is_err());
        assert!(check_token("tenant", "a.b").is_err());
        assert!(check_token("tenant", "*").is_err());
        assert!(check_token("tenant", &"a".repeat(129)).is_err());
    }
}
