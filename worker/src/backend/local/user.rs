//! Who jobs run as: a dedicated unprivileged user when the worker is root, else the worker's own.

use nix::unistd::{Gid, Uid, User};
use openshell_protocol::ErrorKind;

use super::KIND;
use crate::backend::BackendError;

/// The user jobs run as when the worker is root and the pool names none.
pub(super) const DEFAULT_USER: &str = "nobody";

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
}

impl RunAs {
    /// Resolves `user` (the pool's `local.user`) against this host and the worker's own identity.
    pub fn resolve(user: Option<&str>) -> Result<Self, BackendError> {
        if Uid::effective().is_root() {
            let name = user.unwrap_or(DEFAULT_USER);
            let account = lookup(name)?;
            return Ok(Self {
                name: account.name,
                uid: account.uid,
                gid: account.gid,
                switch: true,
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

fn config_error(user: &str, message: String) -> BackendError {
    BackendError::new(
        ErrorKind::SandboxStartFailed,
        KIND,
        format!("user {user}"),
        message,
    )
}
