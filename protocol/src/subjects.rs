//! The NATS subject scheme.
//!
//! | purpose      | subject                                   |
//! |--------------|-------------------------------------------|
//! | requests     | `<prefix>.exec.<pool>.<tenant>`           |
//! | audit events | `<prefix>.audit.<tenant>.<pool>.<event>`  |
//! | cancellation | `<prefix>.cancel.<tenant>.<job_id>`       |
//! | sessions     | `<prefix>.session.{open,run,close,ended}.…` (see [`crate::session`]) |
//!
//! The tenant is taken from the subject, never from the payload, so NATS permissions can pin
//! each agent to its own tenant. Workers of a pool share the queue group `<prefix>.workers.<pool>`.
//!
//! A worker publishes a result where the request's reply subject says, so that subject is
//! checked first ([`Subjects::check_reply`]): it may only be somewhere the requesting tenant
//! could read anyway.

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

/// The inbox prefix NATS clients use unless told otherwise.
pub const INBOX_PREFIX: &str = "_INBOX";

/// Length of a NUID, the random token NATS clients put after `_INBOX.` by default.
const NUID_LEN: usize = 22;

/// Why a reply subject was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyRefusal {
    /// Empty, or holds a wildcard or white space.
    Malformed,
    /// A `$` subject (system, JetStream or key-value API).
    System,
    /// Under the subject prefix, but not the job's own result subject.
    Reserved,
    /// An inbox that is neither the tenant's own (`_INBOX.<tenant>`) nor a client's random one.
    OtherInbox,
    /// Any other subject: the worker cannot know who reads it.
    Unknown,
}

/// A reply subject a worker will not publish on for a tenant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "reply subject `{subject}` is not allowed for tenant `{tenant}` ({}); the job was not run. Reply to `_INBOX.{tenant}.…` (set the client's inbox prefix to `_INBOX.{tenant}`), a client's default `_INBOX.<nuid>` inbox, or the job's own result subject",
    .refusal.describe()
)]
pub struct ReplyError {
    /// The refused subject (cut to 256 characters).
    pub subject: String,
    /// The requesting tenant.
    pub tenant: String,
    /// Which rule refused it.
    pub refusal: ReplyRefusal,
}

impl ReplyRefusal {
    fn describe(self) -> &'static str {
        match self {
            ReplyRefusal::Malformed => "empty, or holds a wildcard or white space",
            ReplyRefusal::System => "a `$` API subject",
            ReplyRefusal::Reserved => "an OpenShell subject other than the job's own result",
            ReplyRefusal::OtherInbox => "another tenant's inbox",
            ReplyRefusal::Unknown => "a subject outside the tenant's inbox and results",
        }
    }
}

/// True for a token shaped like a NUID (22 letters and digits), which clients use as inbox ids.
fn is_nuid(token: &str) -> bool {
    token.len() == NUID_LEN && token.bytes().all(|byte| byte.is_ascii_alphanumeric())
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

    /// The signed checkpoints of audit chain `chain`.
    pub fn audit_checkpoint(&self, chain: &str) -> String {
        format!("{}.audit.checkpoint.{chain}", self.prefix)
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

    /// Where the live output of `job_id` of `tenant` goes, when its request asked for it.
    pub fn output(&self, tenant: &str, job_id: &str) -> String {
        format!("{}.output.{tenant}.{job_id}", self.prefix)
    }

    /// Where `tenant` asks for the stored files of its job `job_id` ([`crate::FileFetch`]).
    pub fn files(&self, tenant: &str, job_id: &str) -> String {
        format!("{}.files.{tenant}.{job_id}", self.prefix)
    }

    /// What workers subscribe to for file fetches.
    pub fn files_all(&self) -> String {
        format!("{}.files.*.*", self.prefix)
    }

    /// The tenant and job id of a file fetch subject.
    pub fn parse_files<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = subject
            .strip_prefix(&self.prefix)?
            .strip_prefix(".files.")?;
        let (tenant, job_id) = rest.split_once('.')?;
        (!job_id.contains('.')).then_some((tenant, job_id))
    }

    /// Where the result of `job_id` of `tenant` is stored (durable mode) and may be sent.
    pub fn result(&self, tenant: &str, job_id: &str) -> String {
        format!("{}.results.{tenant}.{job_id}", self.prefix)
    }

    /// Checks that a result of `tenant`'s job `job_id` may be published on `reply`: the
    /// tenant's own inbox `_INBOX.<tenant>[.…]`, a client's default `_INBOX.<nuid>[.…]` (which
    /// no agent confined by `accounts.conf` can read but its owner), or the job's own result
    /// subject. Everything else is refused: another tenant's inbox or results, audit and other
    /// prefix subjects, `$` API subjects (a reply there would be an API call made with the
    /// worker's permissions), and subjects whose readers the worker cannot know.
    pub fn check_reply(
        &self,
        tenant: &str,
        job_id: Option<&str>,
        reply: &str,
    ) -> Result<(), ReplyError> {
        let refuse = |refusal| ReplyError {
            subject: reply.chars().take(256).collect(),
            tenant: tenant.to_string(),
            refusal,
        };
        let malformed = reply.is_empty()
            || reply
                .split('.')
                .any(|token| token.is_empty() || token == "*" || token == ">")
            || reply.chars().any(char::is_whitespace);
        if malformed {
            return Err(refuse(ReplyRefusal::Malformed));
        }
        if reply.starts_with('$') {
            return Err(refuse(ReplyRefusal::System));
        }
        let mut tokens = reply.split('.');
        if tokens.next() == Some(INBOX_PREFIX) {
            return match tokens.next() {
                Some(owner) if owner == tenant || is_nuid(owner) => Ok(()),
                _ => Err(refuse(ReplyRefusal::OtherInbox)),
            };
        }
        if reply == self.prefix || reply.starts_with(&format!("{}.", self.prefix)) {
            return match job_id {
                Some(id) if reply == self.result(tenant, id) => Ok(()),
                _ => Err(refuse(ReplyRefusal::Reserved)),
            };
        }
        Err(refuse(ReplyRefusal::Unknown))
    }

    /// Where `tenant` opens a session on `pool` ([`crate::session::SessionOpen`]).
    pub fn session_open(&self, pool: &str, tenant: &str) -> String {
        format!("{}.session.open.{pool}.{tenant}", self.prefix)
    }

    /// Where the jobs of session `session` of `tenant`, held by worker `worker`, go.
    pub fn session_run(&self, worker: &str, tenant: &str, session: &str) -> String {
        format!("{}.session.run.{worker}.{tenant}.{session}", self.prefix)
    }

    /// Where session `session` of `tenant`, held by worker `worker`, is closed.
    pub fn session_close(&self, worker: &str, tenant: &str, session: &str) -> String {
        format!("{}.session.close.{worker}.{tenant}.{session}", self.prefix)
    }

    /// Where a worker tells `tenant` that its session ended without being asked to.
    pub fn session_ended(&self, tenant: &str, session: &str) -> String {
        format!("{}.session.ended.{tenant}.{session}", self.prefix)
    }

    /// What a worker subscribes to for its own sessions' jobs and closes.
    pub fn session_worker_wildcard(&self, verb: &str, worker: &str) -> String {
        format!("{}.session.{verb}.{worker}.*.*", self.prefix)
    }

    /// The `(pool, tenant)` of a session open subject.
    pub fn parse_session_open<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = subject
            .strip_prefix(&self.prefix)?
            .strip_prefix(".session.open.")?;
        let (pool, tenant) = rest.split_once('.')?;
        (!tenant.contains('.')).then_some((pool, tenant))
    }

    /// The `(tenant, session)` of a session run or close subject of worker `worker`.
    pub fn parse_session<'a>(
        &self,
        verb: &str,
        worker: &str,
        subject: &'a str,
    ) -> Option<(&'a str, &'a str)> {
        let rest = subject
            .strip_prefix(&self.prefix)?
            .strip_prefix(".session.")?
            .strip_prefix(verb)?
            .strip_prefix('.')?
            .strip_prefix(worker)?
            .strip_prefix('.')?;
        let (tenant, session) = rest.split_once('.')?;
        (!session.contains('.')).then_some((tenant, session))
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
    fn session_subjects_name_the_worker_and_tenant() {
        let subjects = Subjects::default();
        let run = subjects.session_run("w1", "acme", "s1");
        assert_eq!(run, "openshell.session.run.w1.acme.s1");
        assert_eq!(
            subjects.parse_session("run", "w1", &run),
            Some(("acme", "s1"))
        );
        assert_eq!(subjects.parse_session("run", "w2", &run), None);
        assert_eq!(subjects.parse_session("close", "w1", &run), None);
        assert_eq!(
            subjects.parse_session("run", "w1", "openshell.session.run.w1.acme.s1.x"),
            None
        );
        assert_eq!(
            subjects.parse_session_open(&subjects.session_open("docker", "acme")),
            Some(("docker", "acme"))
        );
    }

    #[test]
    fn replies_go_only_where_the_tenant_reads() {
        let subjects = Subjects::default();
        let check = |reply: &str| {
            subjects
                .check_reply("acme", Some("job-1"), reply)
                .map_err(|error| error.refusal)
        };
        assert_eq!(check("_INBOX.acme.x1.2"), Ok(()));
        assert_eq!(check("_INBOX.acme"), Ok(()));
        assert_eq!(check("_INBOX.abcdefghijABCDEFGHIJ01.7"), Ok(()));
        assert_eq!(check("openshell.results.acme.job-1"), Ok(()));
        assert_eq!(check("_INBOX.globex.x1.2"), Err(ReplyRefusal::OtherInbox));
        assert_eq!(check("_INBOX"), Err(ReplyRefusal::OtherInbox));
        assert_eq!(
            check("openshell.results.globex.job-1"),
            Err(ReplyRefusal::Reserved)
        );
        assert_eq!(
            check("openshell.results.acme.job-2"),
            Err(ReplyRefusal::Reserved)
        );
        assert_eq!(
            check("openshell.audit.globex.none.finished"),
            Err(ReplyRefusal::Reserved)
        );
        assert_eq!(
            check("$JS.API.STREAM.PURGE.OPENSHELL_AUDIT"),
            Err(ReplyRefusal::System)
        );
        assert_eq!(check("$KV.OPENSHELL_ATTEMPTS.x"), Err(ReplyRefusal::System));
        assert_eq!(check("app.replies"), Err(ReplyRefusal::Unknown));
        assert_eq!(check("_INBOX.acme.>"), Err(ReplyRefusal::Malformed));
        assert_eq!(check("a..b"), Err(ReplyRefusal::Malformed));
        assert_eq!(
            subjects
                .check_reply("acme", None, "openshell.results.acme.job-1")
                .map_err(|error| error.refusal),
            Err(ReplyRefusal::Reserved)
        );
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
