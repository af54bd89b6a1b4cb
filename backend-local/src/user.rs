//! Who jobs run as: a dedicated unprivileged user when the worker is root, else the worker's own.

use nix::unistd::{Gid, Uid, User};
use openshell_protocol::ErrorKind;

use super::KIND;
use openshell_backend::BackendError;

/// The user jobs run as when the worker is root and the pool names none: one of its own, which
/// no other service shares (`nobody` is shared), created by `deploy/setup.sh` (lib/local.sh).
pub(super) const DEFAULT_USER: &str = "openshell-job";

/// The account jobs run as, resolved once when the backend is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RunAs {
    /// User name, for messages and enforcement reports.
    pub name: String,
    /// User id.
    pub uid: Uid,
    /// Primary group id.
    pub gid: Gid,
    /// The worker is root and switches the child to `uid`/`gid` before exec.
    pub switch: bool,
    /// `uid` is this job's alone (from `[pools.NAME.local] uids`), not shared with other jobs.
    pub per_job: bool,
}

impl RunAs {
    /// Resolves `user` (the pool's `local.user`) against this host and the worker's own identity.
    pub fn resolve(user: Option<&str>) -> Result<Self, BackendError> {
        if Uid::effective().is_root() {
            let account = match user {
                Some(name) => lookup(name)?,
                None => lookup(DEFAULT_USER).map_err(|_| missing_default())?,
            };
            return Ok(Self {
                name: account.name,
                uid: account.uid,
                gid: account.gid,
                switch: true,
                per_job: false,
            });
        }
        let uid = Uid::effective();
        let name = match User::from_uid(uid) {
            Ok(Some(account)) => account.name,
            _ => uid.to_string(),
        };
        if let Some(wanted) = user.filter(|wanted| *wanted != name) {
            return Err(config_error(
                wanted,
                format!(
                    "the worker runs as `{name}`, not root, so it cannot run jobs as `{wanted}`; \
                     remove `user` from [pools.NAME.local] or run the worker as root"
                ),
            ));
        }
        Ok(Self {
            name,
            uid,
            gid: Gid::effective(),
            switch: false,
            per_job: false,
        })
    }

    /// The ids the child switches to, when it switches.
    pub fn switch_to(&self) -> Option<(Uid, Gid)> {
        self.switch.then_some((self.uid, self.gid))
    }
}

fn lookup(name: &str) -> Result<User, BackendError> {
    match User::from_name(name) {
        Ok(Some(account)) => Ok(account),
        Ok(None) => Err(config_error(
            name,
            format!(
                "user `{name}` does not exist on this host; create it \
                 (e.g. `useradd --system --no-create-home {name}`) or set [pools.NAME.local] \
                 user to an existing unprivileged user"
            ),
        )),
        Err(errno) => Err(config_error(
            name,
            format!("looking up user `{name}` failed: {errno}; check /etc/passwd and NSS"),
        )),
    }
}

/// The default job user is missing: setup creates it.
fn missing_default() -> BackendError {
    config_error(
        DEFAULT_USER,
        format!(
            "the local backend runs jobs as user `{DEFAULT_USER}` when the worker is root, and this host \
             has no such user; create it with `deploy/setup.sh --install-only` (or `useradd --system \
             --user-group --no-create-home --shell /usr/sbin/nologin {DEFAULT_USER}`), or set \
             [pools.NAME.local] user to another unprivileged user that no other service uses"
        ),
    )
}

fn config_error(user: &str, message: String) -> BackendError {
    BackendError::new(
        ErrorKind::SandboxStartFailed,
        KIND,
        format!("user {user}"),
        message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root worker runs jobs as the dedicated user, which setup creates (CI runs setup, so
    /// there it must exist); without it, the error names the user and the command.
    #[test]
    fn a_root_worker_runs_jobs_as_the_dedicated_user() {
        if !Uid::effective().is_root() {
            let own = RunAs::resolve(None).unwrap();
            assert!(!own.switch);
            return;
        }
        match RunAs::resolve(None) {
            Ok(run_as) => {
                assert_eq!(run_as.name, DEFAULT_USER);
                assert!(run_as.switch && !run_as.uid.is_root());
            }
            Err(error) => {
                assert!(
                    std::env::var("CI").is_err(),
                    "CI runs deploy/setup.sh --install-only, which creates `{DEFAULT_USER}`: {error}"
                );
                let text = error.to_string();
                assert!(
                    text.contains(DEFAULT_USER) && text.contains("deploy/setup.sh --install-only"),
                    "{text}"
                );
            }
        }
        let error = RunAs::resolve(Some("openshell-no-such-user")).unwrap_err();
        assert!(
            error.to_string().contains("openshell-no-such-user"),
            "{error}"
        );
    }
}
