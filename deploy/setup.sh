#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Installs and starts what OpenShell needs on this host, idempotently.
# Debian/Ubuntu, as root or with sudo. Each service lives in deploy/lib/NAME.sh.
#
#   deploy/setup.sh                 install, then start services
#   deploy/setup.sh --install-only  install only (tests start their own servers)
#   deploy/setup.sh --no-nats       skip nats-server (use your own, via NATS_URL)
#   deploy/setup.sh --no-docker     skip Docker (dockerd and the sandbox image)
#
# OPENSHELL_STATE_DIR: where services keep state (default /var/lib/openshell as
# root, ~/.local/state/openshell otherwise). The workers' audit signing key is made there
# too, as audit-key.pem (set OPENSHELL_AUDIT_KEY to it), unless it exists.
set -euo pipefail

deploy_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/common.sh
source "$deploy_dir/lib/common.sh"
# shellcheck source=lib/nats.sh
source "$deploy_dir/lib/nats.sh"
# shellcheck source=lib/ssh.sh
source "$deploy_dir/lib/ssh.sh"
# shellcheck source=lib/local.sh
source "$deploy_dir/lib/local.sh"
# shellcheck source=lib/prometheus.sh
source "$deploy_dir/lib/prometheus.sh"
# shellcheck source=lib/compose.sh
source "$deploy_dir/lib/compose.sh"
# shellcheck source=lib/docker.sh
source "$deploy_dir/lib/docker.sh"
# shellcheck source=lib/audit.sh
source "$deploy_dir/lib/audit.sh"

usage() {
    sed -n '3,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

install_only=no
with_nats=yes
with_docker=yes
for arg in "$@"; do
    case $arg in
    --install-only) install_only=yes ;;
    --no-nats) with_nats=no ;;
    --no-docker) with_docker=no ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        die "unknown option: $arg"
        ;;
    esac
done

state_dir=${OPENSHELL_STATE_DIR:-$(default_state_dir)}

if [[ $with_nats == yes ]]; then
    nats_install
fi
ssh_install
local_install
prometheus_install
compose_install
k8s_validate_install
if [[ $with_docker == yes ]]; then
    docker_install
fi
audit_key_ensure "$state_dir"

if [[ $install_only == yes ]]; then
    say "install done (--install-only: nothing started)"
    exit 0
fi

if [[ $with_nats == yes ]]; then
    nats_start "$state_dir"
fi
if [[ $with_docker == yes ]]; then
    docker_start "$state_dir"
    docker_image_ensure
fi
say "setup done"
