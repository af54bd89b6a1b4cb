#!/usr/bin/env bash
# Prepares a Debian/Ubuntu host to run OpenShell jobs over SSH. Run it ON THE REMOTE HOST,
# as root. Idempotent: run it again after an upgrade, or to change a setting.
#
#   prepare.sh --pubkey FILE [--user NAME] [--uids FIRST:COUNT] [--nproc N] [--nofile N]
#
#   --pubkey FILE      the worker's public key (ssh-keygen -y -f $SSH_KEY_PATH > worker.pub)
#   --user NAME        the SSH login (transport) user the worker connects as (default:
#                      openshell); it never runs jobs itself
#   --uids FIRST:COUNT the pool of uids jobs run as, one per running job (default: 61000:64);
#                      give at least channels_per_connection x max_connections of the pool
#   --nproc N          hard cap on each job uid's processes (default: 4096)
#   --nofile N         hard cap on open files per process (default: 4096)
#
# It installs openssh-server, sudo, bubblewrap and the tools jobs need; creates the transport
# user with a root-owned home and a root-owned authorized_keys; creates one account per job
# uid; installs the sandbox helper (deploy/ssh-host/sandbox, sandbox-init) and the one sudo rule that lets
# the transport user run it; hardens sshd for that user; and checks the result with
# `sandbox check`. See README.md.
set -euo pipefail

user=openshell
pubkey=
uids=61000:64
nproc=4096
nofile=4096
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

HELPER_DIR=/usr/local/libexec/openshell
HELPER=$HELPER_DIR/sandbox
CONFIG_DIR=/etc/openshell
KEYS_DIR=$CONFIG_DIR/authorized_keys
JOB_USER_PREFIX=openshell-job-
CGROUP_NAME=openshell

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}
usage() { sed -n '3,21s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

while [[ $# -gt 0 ]]; do
    case $1 in
    --user) user=${2:?--user needs a name}; shift 2 ;;
    --pubkey) pubkey=${2:?--pubkey needs a file}; shift 2 ;;
    --uids) uids=${2:?--uids needs FIRST:COUNT}; shift 2 ;;
    --nproc) nproc=${2:?--nproc needs a number}; shift 2 ;;
    --nofile) nofile=${2:?--nofile needs a number}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
    esac
done

[[ $(id -u) -eq 0 ]] || die "run as root on the host that will run jobs"
[[ -n $pubkey && -r $pubkey ]] || die "give the worker's public key with --pubkey FILE"
[[ $user =~ ^[a-z_][a-z0-9_-]{0,30}$ ]] || die "--user: '$user' is not a valid user name"
[[ $user != root ]] || die "the transport user cannot be root: pick an unprivileged user"
[[ $uids =~ ^([0-9]+):([0-9]+)$ ]] || die "--uids: give FIRST:COUNT, e.g. 61000:64"
uid_first=${BASH_REMATCH[1]}
uid_count=${BASH_REMATCH[2]}
((uid_first >= 1000 && uid_count >= 1 && uid_count <= 65536)) ||
    die "--uids: FIRST must be at least 1000 and COUNT 1 to 65536"
[[ $nproc =~ ^[0-9]+$ && $nofile =~ ^[0-9]+$ ]] || die "--nproc and --nofile take numbers"
[[ -f $here/sandbox && -f $here/sandbox-init && -f $here/sandbox-session && -f $here/sandbox-init-session && -f $here/sandbox-serve ]] ||
    die "$here/sandbox or sandbox-init is missing: copy deploy/ssh-host/ whole to the host"

install_packages() {
    local wanted=(openssh-server sudo bubblewrap coreutils util-linux perl-base) missing=()
    local package
    for package in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        say "packages present: ${wanted[*]}"
        return 0
    fi
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# The transport user logs in and runs the helper through sudo, nothing else. Its home and
# everything sshd reads for it belong to root, so no job (and no other user) can change how
# the worker's connections are served.
create_transport_user() {
    if id "$user" >/dev/null 2>&1; then
        [[ $(id -u "$user") -ne 0 ]] || die "user $user has uid 0"
        say "transport user $user exists"
    else
        say "creating transport user $user"
        useradd --system --create-home --shell /bin/sh --password '*' "$user"
    fi
    local uid home
    uid=$(id -u "$user")
    ((uid < uid_first || uid >= uid_first + uid_count)) || die "transport user $user (uid $uid) lies inside the job uid pool $uids"
    # '*' (not '!'): no password login, but not "locked", so sshd accepts its keys.
    usermod --password '*' --shell /bin/sh "$user"
    home=$(getent passwd "$user" | cut -d: -f6)
    [[ $home == /* && $home != / ]] || die "user $user has home '$home'; give it a home of its own"
    # Earlier versions let the user own its home and ~/.ssh: take them back.
    install -d -o root -g root -m 0755 "$home"
    chown -R root:root "$home"
    chmod -R go-w "$home"
}

# One account per job uid, so `id` and `ps` name them and no one else gets these uids.
create_job_users() {
    say "job uid pool: $uid_count accounts ${JOB_USER_PREFIX}0.. from uid $uid_first (no login, no home)"
    local i uid name owner
    for ((i = 0; i < uid_count; i++)); do
        uid=$((uid_first + i))
        name=$JOB_USER_PREFIX$i
        owner=$(getent passwd "$uid" | cut -d: -f1 || true)
        if [[ -n $owner && $owner != "$name" ]]; then
            die "uid $uid belongs to $owner: pick another pool with --uids"
        fi
        if [[ -z $owner ]]; then
            if getent passwd "$name" >/dev/null; then
                die "user $name exists with another uid: remove it or pick another --uids"
            fi
            getent group "$uid" >/dev/null || groupadd -K GID_MAX="$uid" --gid "$uid" "$name"
            [[ $(getent group "$uid" | cut -d: -f1) == "$name" ]] || die "gid $uid belongs to another group: pick another pool with --uids"
            useradd -K UID_MAX="$uid" --uid "$uid" --gid "$uid" --no-create-home --home-dir /workspace \
                --shell /usr/sbin/nologin --password '!' "$name"
        fi
    done
}

install_helper() {
    say "installing the sandbox helper as $HELPER (and $HELPER-init, pid 1 of each sandbox)"
    install -d -o root -g root -m 0755 "$HELPER_DIR" "$CONFIG_DIR"
    local file
    for file in sandbox-init sandbox; do
        install -o root -g root -m 0755 "$here/$file" "$HELPER_DIR/$file.new"
        mv -f "$HELPER_DIR/$file.new" "$HELPER_DIR/$file"
    done
    # Sessions and the resident runner: loaded by sandbox and sandbox-init, not run on their own.
    for file in sandbox-session sandbox-init-session sandbox-serve; do
        install -o root -g root -m 0644 "$here/$file" "$HELPER_DIR/$file.new"
        mv -f "$HELPER_DIR/$file.new" "$HELPER_DIR/$file"
    done
    local binds=()
    [[ -d /opt ]] && binds+=(/opt)
    cat >"$CONFIG_DIR/sandbox.conf.new" <<CONF
# The OpenShell job sandbox (deploy/ssh-host/prepare.sh). Jobs run as uid_first ..
# uid_first + uid_count - 1, one uid per running job, in cgroups below <hierarchy>/$CGROUP_NAME.
uid_first=$uid_first
uid_count=$uid_count
cgroup=$CGROUP_NAME
# Host directories jobs see read-only besides /usr, /etc, /bin, /lib* (space-separated).
ro_binds=${binds[*]}
CONF
    chmod 0644 "$CONFIG_DIR/sandbox.conf.new"
    mv -f "$CONFIG_DIR/sandbox.conf.new" "$CONFIG_DIR/sandbox.conf"
}

allow_sudo() {
    local rule=/etc/sudoers.d/openshell-$user
    say "sudo: $user may run '$HELPER run|serve|kill TOKEN|status TOKEN|check|hold ID|enter ID|reset ID' as root, nothing else"
    install -d -m 0750 /etc/sudoers.d
    cat >"$rule.new" <<SUDO
# OpenShell (deploy/ssh-host/prepare.sh): the SSH transport user starts, stops and checks
# sandboxed jobs. No pty (stdin carries binary data), no PAM session and no log line per job.
Defaults!$HELPER !use_pty, !pam_session, !pam_setcred, !log_allowed, !lecture, !fqdn, env_reset
$user ALL=(root) NOPASSWD: $HELPER run, $HELPER serve, $HELPER kill *, $HELPER status *, $HELPER check, $HELPER hold *, $HELPER enter *, $HELPER reset *
SUDO
    chmod 0440 "$rule.new"
    visudo -cq -f "$rule.new" || die "visudo rejects $rule.new"
    mv -f "$rule.new" "$rule"
}

install_key() {
    local keys=$KEYS_DIR/$user
    say "authorizing the worker's key for $user in $keys (root-owned; restricted: no pty, no forwarding but egress sockets)"
    install -d -o root -g root -m 0755 "$KEYS_DIR"
    # port-forwarding lets sshd's own settings decide (the Match block below): no TCP listener
    # (PermitListen none), only the Unix sockets the worker asks sshd to listen on.
    printf 'restrict,port-forwarding %s\n' "$(cat "$pubkey")" >"$keys.new"
    chmod 0644 "$keys.new"
    mv -f "$keys.new" "$keys"
}

cap_resources() {
    say "capping $user and the job uids: nproc $nproc, nofile $nofile, no core dumps (pam_limits)"
    cat >/etc/security/limits.d/openshell-$user.conf <<LIMITS
# OpenShell (deploy/ssh-host/prepare.sh). Jobs inherit these from the transport user's
# session; each job sets tighter limits of its own.
$user hard nproc $nproc
$user hard nofile $nofile
$user hard core 0
LIMITS
}

harden_sshd() {
    local snippet=/etc/ssh/sshd_config.d/openshell-$user.conf
    say "sshd: $user logs in with the root-owned key only, may only run commands (MaxSessions 10)"
    install -d /etc/ssh/sshd_config.d
    # Earlier versions wrote one snippet that read keys from the user's own ~/.ssh.
    if [[ -f /etc/ssh/sshd_config.d/openshell.conf ]] &&
        grep -q 'deploy/ssh-host/prepare.sh' /etc/ssh/sshd_config.d/openshell.conf; then
        rm -f /etc/ssh/sshd_config.d/openshell.conf
    fi
    cat >"$snippet" <<SSHD
# OpenShell (deploy/ssh-host/prepare.sh). The worker keeps 8 job channels per connection
# and needs 2 more for kills: keep MaxSessions at 10 or more. Nothing the transport user
# could write is read: keys come from a root-owned file, no ~/.ssh/rc, no environment.
Match User $user
    AuthorizedKeysFile $KEYS_DIR/%u
    AuthorizedPrincipalsFile none
    MaxSessions 10
    PasswordAuthentication no
    KbdInteractiveAuthentication no
    PermitTTY no
    PermitUserRC no
    # No forwarding but the one egress socket per job that the worker asks sshd to listen on
    # (in /tmp/openshell-egress-N, mode 0666 so the job's uid may connect): every connection
    # to it comes back to the worker's egress proxy. OpenSSH refuses remote Unix-socket
    # forwards when AllowTcpForwarding excludes remote ones, so TCP remote forwards are
    # allowed there and refused by PermitListen none (it governs TCP listeners only).
    AllowTcpForwarding remote
    PermitListen none
    AllowAgentForwarding no
    X11Forwarding no
    AllowStreamLocalForwarding remote
    StreamLocalBindMask 0111
    PermitTunnel no
SSHD
    grep -qE '^\s*Include\s+/etc/ssh/sshd_config.d/\*\.conf' /etc/ssh/sshd_config ||
        die "/etc/ssh/sshd_config does not include sshd_config.d/*.conf; add the Match block of $snippet by hand"
    mkdir -p /run/sshd
    sshd -t || die "sshd -t rejects the configuration"
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet ssh 2>/dev/null; then
        systemctl reload ssh
    fi
}

check_sandbox() {
    say "checking the sandbox ($HELPER check)"
    local report problems
    report=$("$HELPER" check)
    printf '%s\n' "$report" | grep -vE '^(hard|problem)=' | sed 's/^/    /'
    problems=$(printf '%s\n' "$report" | sed -n 's/^problem=//p')
    [[ -z $problems ]] || die "the sandbox is not ready: $problems"
    printf '%s\n' "$report" | grep -qx 'sandbox=ok' || die "the trial sandbox did not run"
    if printf '%s\n' "$report" | grep -q '^cgroup_.*=none'; then
        say "note: limits needing a missing cgroup controller are refused (limit_not_enforceable) unless the pool allows unenforced limits"
    fi
}

install_packages
create_transport_user
create_job_users
install_helper
allow_sudo
install_key
cap_resources
harden_sshd
check_sandbox
say "done: on the worker, add this host's key with: ssh-keyscan -p PORT $(hostname -f 2>/dev/null || hostname) >> ~/.ssh/known_hosts"
