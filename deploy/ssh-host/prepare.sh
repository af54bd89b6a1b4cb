#!/usr/bin/env bash
# Prepares a Debian/Ubuntu host to run OpenShell jobs over SSH. Run it ON THE REMOTE HOST,
# as root. Idempotent.
#
#   prepare.sh --pubkey FILE [--user NAME] [--nproc N] [--nofile N] [--cgroup DIR]
#
#   --pubkey FILE   the worker's public key (ssh-keygen -y -f $SSH_KEY_PATH > worker.pub)
#   --user NAME     the unprivileged user jobs run as (default: openshell)
#   --nproc N       hard cap on that user's processes, all jobs together (default: 4096)
#   --nofile N      hard cap on open files per process (default: 4096)
#   --cgroup DIR    also delegate a cgroup v2 directory (e.g. /sys/fs/cgroup/openshell) so
#                   memory, CPU share and processes are enforced per job; see README.md
#
# It installs openssh-server and the tools the job wrapper uses, creates the user (no
# password, shell /bin/sh), installs the key with `restrict` (no pty, no forwarding),
# caps the user's resources, and hardens sshd for that user.
set -euo pipefail

user=openshell
pubkey=
nproc=4096
nofile=4096
cgroup=

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}
usage() { sed -n '3,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

while [[ $# -gt 0 ]]; do
    case $1 in
    --user) user=${2:?--user needs a name}; shift 2 ;;
    --pubkey) pubkey=${2:?--pubkey needs a file}; shift 2 ;;
    --nproc) nproc=${2:?--nproc needs a number}; shift 2 ;;
    --nofile) nofile=${2:?--nofile needs a number}; shift 2 ;;
    --cgroup) cgroup=${2:?--cgroup needs a directory}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
    esac
done

[[ $(id -u) -eq 0 ]] || die "run as root on the host that will run jobs"
[[ -n $pubkey && -r $pubkey ]] || die "give the worker's public key with --pubkey FILE"
[[ $user != root ]] || die "jobs never run as root: pick an unprivileged user"

install_packages() {
    say "installing openssh-server and the job wrapper's tools (coreutils, util-linux)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        openssh-server coreutils util-linux
}

create_user() {
    if id "$user" >/dev/null 2>&1; then
        [[ $(id -u "$user") -ne 0 ]] || die "user $user has uid 0"
        say "user $user exists"
    else
        say "creating user $user"
        useradd --create-home --shell /bin/sh --password '*' "$user"
    fi
    # '*' (not '!'): no password login, but not "locked", so sshd accepts its keys.
    usermod --password '*' --shell /bin/sh "$user"
}

install_key() {
    local home ssh_dir
    home=$(getent passwd "$user" | cut -d: -f6)
    ssh_dir="$home/.ssh"
    install -d -m 700 -o "$user" -g "$user" "$ssh_dir"
    say "authorizing the worker's key for $user (restricted: no pty, no forwarding)"
    printf 'restrict %s\n' "$(cat "$pubkey")" >"$ssh_dir/authorized_keys"
    chown "$user:$user" "$ssh_dir/authorized_keys"
    chmod 600 "$ssh_dir/authorized_keys"
}

cap_resources() {
    say "capping $user: nproc $nproc, nofile $nofile, no core dumps (pam_limits)"
    cat >/etc/security/limits.d/openshell.conf <<LIMITS
# OpenShell jobs (deploy/ssh-host/prepare.sh). Each job sets tighter limits of its own.
$user hard nproc $nproc
$user hard nofile $nofile
$user hard core 0
LIMITS
}

harden_sshd() {
    say "sshd: $user may only run commands (MaxSessions 10, no tty, no forwarding)"
    install -d /etc/ssh/sshd_config.d
    cat >/etc/ssh/sshd_config.d/openshell.conf <<SSHD
# OpenShell jobs (deploy/ssh-host/prepare.sh). The worker keeps 8 job channels per
# connection and needs 2 more for kills: keep MaxSessions at 10 or more.
Match User $user
    MaxSessions 10
    PasswordAuthentication no
    KbdInteractiveAuthentication no
    PermitTTY no
    AllowTcpForwarding no
    AllowAgentForwarding no
    X11Forwarding no
    PermitTunnel no
SSHD
    grep -qE '^\s*Include\s+/etc/ssh/sshd_config.d/\*\.conf' /etc/ssh/sshd_config ||
        die "/etc/ssh/sshd_config does not include sshd_config.d/*.conf; add the Match block by hand"
    sshd -t || die "sshd -t rejects the configuration"
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet ssh 2>/dev/null; then
        systemctl reload ssh
    fi
}

delegate_cgroup() {
    [[ -n $cgroup ]] || return 0
    [[ -f /sys/fs/cgroup/cgroup.controllers ]] ||
        die "--cgroup needs the unified cgroup v2 hierarchy at /sys/fs/cgroup (this host runs v1 or hybrid)"
    local parent
    parent=$(dirname "$cgroup")
    say "delegating $cgroup to $user (memory, cpu, pids)"
    echo "+memory +cpu +pids" >"$parent/cgroup.subtree_control"
    mkdir -p "$cgroup"
    echo "+memory +cpu +pids" >"$cgroup/cgroup.subtree_control"
    chown "$user:$user" "$cgroup" "$cgroup/cgroup.procs" "$cgroup/cgroup.subtree_control" "$cgroup/cgroup.threads"
    cat <<NOTE
    A job can only join $cgroup/job-* if its SSH session already runs inside $cgroup:
    run the sshd that serves $user inside it (e.g. a dedicated sshd unit with
    Delegate=yes and its cgroup under $cgroup), then check with the worker's probe
    (set [pools.NAME.ssh] cgroup_parent = "$cgroup" and require_cgroups = true).
NOTE
}

install_packages
create_user
install_key
cap_resources
harden_sshd
delegate_cgroup
say "done: on the worker, add this host's key with: ssh-keyscan -p PORT $(hostname -f 2>/dev/null || hostname) >> ~/.ssh/known_hosts"
