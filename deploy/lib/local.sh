# shellcheck shell=bash
# The local backend (SANDBOX_BACKEND=none): the dedicated user a root worker runs jobs as,
# and bubblewrap, with which each job gets its own pid, mount, ipc, uts and network
# namespaces (backend-local/src/sandbox.rs). Needs lib/common.sh sourced first.

# The user a root worker runs local jobs as unless a pool names another
# (backend-local/src/user.rs DEFAULT_USER). Shared with no other service.
LOCAL_JOB_USER=openshell-job

# Creates the job user (a system user and group of its own, no home, no login shell) unless
# it exists, and installs bubblewrap unless present.
local_install() {
    if id -u "$LOCAL_JOB_USER" >/dev/null 2>&1; then
        say "local backend job user already exists: $LOCAL_JOB_USER (uid $(id -u "$LOCAL_JOB_USER"))"
    else
        have useradd || die "useradd not found: install passwd (Debian) to create the $LOCAL_JOB_USER user"
        as_root useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin --comment "OpenShell local backend jobs" "$LOCAL_JOB_USER"
        say "created the local backend job user: $LOCAL_JOB_USER (uid $(id -u "$LOCAL_JOB_USER"))"
    fi
    if have bwrap; then
        say "bubblewrap already installed: $(command -v bwrap)"
        return 0
    fi
    apt_install "the local backend's sandbox (one set of namespaces per job)" bubblewrap
    have bwrap || die "bubblewrap did not install bwrap"
}
