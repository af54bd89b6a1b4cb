# shellcheck shell=bash
# Shared helpers for the deploy scripts: progress lines, root, apt-get.

# Progress line for a step.
say() { printf '==> %s\n' "$*"; }
# Detail under a step.
note() { printf '    %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

# Runs a command as root: directly when root, else through sudo.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif have sudo; then
        sudo "$@"
    else
        die "'$*' needs root: run as root or install sudo"
    fi
}

APT_UPDATED=no

# apt_install WHY PACKAGE...: installs Debian packages, running `apt-get update`
# at most once per run. Without apt-get, says what to install by hand and fails.
apt_install() {
    local why=$1
    shift
    if ! have apt-get; then
        printf 'ERROR: this system has no apt-get; %s needs, by hand:\n' "$why" >&2
        printf '         %s\n' "$@" >&2
        printf '       (Debian package names), then run deploy/setup.sh again.\n' >&2
        exit 1
    fi
    if [[ $APT_UPDATED == no ]]; then
        say "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=yes
    fi
    say "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# Default state directory: system-wide for root, per user otherwise.
default_state_dir() {
    if [[ $(id -u) -eq 0 ]]; then
        echo /var/lib/openshell
    else
        echo "${XDG_STATE_HOME:-$HOME/.local/state}/openshell"
    fi
}
