# shellcheck shell=bash
# Docker for the docker backend: install the engine (Debian's docker.io), start dockerd
# without systemd when none answers, and make sure the sandbox image exists (built offline
# with debootstrap when it is missing). Needs lib/common.sh sourced first.
#
# dockerd is started with --bridge=none --iptables=false --ip-masq=false --ip-forward=false:
# sandboxes run with network none, so the engine needs no bridge, no NAT and no change to
# the host's firewall or sysctls. A pool that grants network must name a network the
# operator created ([pools.NAME.docker] network).

DOCKER_SOCKET=/var/run/docker.sock
SANDBOX_IMAGE=${SANDBOX_DOCKER_IMAGE:-openshell-sandbox:latest}
SANDBOX_IMAGE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../sandbox-image" && pwd)"

# Installs the Docker engine and client unless both are there.
docker_install() {
    if have dockerd && have docker; then
        say "docker already installed: $(docker --version)"
        return 0
    fi
    apt_install "the docker backend" docker.io
    have dockerd || die "docker.io installed but dockerd is not on PATH (is /usr/sbin on PATH?)"
}

# True when a daemon answers at DOCKER_HOST or the default socket.
docker_is_up() {
    timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

# Starts dockerd in the background unless one answers; waits for its socket.
docker_start() {
    local state_dir=$1 dir driver
    if docker_is_up; then
        say "Docker daemon already running: engine $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')${DOCKER_HOST:+ at $DOCKER_HOST}"
        return 0
    fi
    if [[ -n ${DOCKER_HOST:-} && $DOCKER_HOST != "unix://$DOCKER_SOCKET" ]]; then
        die "DOCKER_HOST=$DOCKER_HOST does not answer: start that engine, or unset DOCKER_HOST to use a local dockerd"
    fi
    have dockerd || die "dockerd not found: run deploy/setup.sh without --install-only first"
    dir="$state_dir/docker"
    mkdir -p "$dir"
    # overlay2 works on ext4/xfs hosts; where the kernel refuses it (overlay on overlay),
    # fall back to vfs, which is slow but works anywhere. OPENSHELL_DOCKER_STORAGE_DRIVER forces one.
    for driver in ${OPENSHELL_DOCKER_STORAGE_DRIVER:-overlay2 vfs}; do
        docker_launch "$dir" "$driver" && return 0
        warn "dockerd did not start with storage driver $driver"
    done
    die "dockerd did not start; log: $dir/dockerd.log"
}

# Starts dockerd with storage driver $2, logging to $1/dockerd.log; fails if it exits or
# does not answer within 60 s.
docker_launch() {
    local dir=$1 driver=$2 pid tries
    say "starting dockerd (storage driver $driver, no bridge, no iptables; log $dir/dockerd.log)"
    # As systemd's docker.service does: containers may then get any nofile ulimit up to nr_open.
    ulimit -n "$(cat /proc/sys/fs/nr_open 2>/dev/null || echo 1048576)" 2>/dev/null || true
    setsid dockerd --host "unix://$DOCKER_SOCKET" --pidfile "$dir/dockerd.pid" \
        --storage-driver "$driver" --bridge=none --iptables=false --ip-masq=false \
        --ip-forward=false </dev/null >>"$dir/dockerd.log" 2>&1 &
    pid=$!
    for ((tries = 0; tries < 300; tries++)); do
        if docker_is_up; then
            say "Docker daemon ready: engine $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})') (pid $pid)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 15 "$dir/dockerd.log" >&2
            return 1
        fi
        sleep 0.2
    done
    tail -n 15 "$dir/dockerd.log" >&2
    kill "$pid" 2>/dev/null || true
    return 1
}

# Builds the sandbox image offline unless the engine already has it.
docker_image_ensure() {
    if docker image inspect "$SANDBOX_IMAGE" >/dev/null 2>&1; then
        say "sandbox image $SANDBOX_IMAGE present"
        return 0
    fi
    say "sandbox image $SANDBOX_IMAGE missing: building it offline"
    bash "$SANDBOX_IMAGE_DIR/build-offline.sh" "$SANDBOX_IMAGE"
}

# Removes OpenShell containers whose worker process on this host is gone (a worker killed
# with SIGKILL before this run), so that the final check speaks of this run only. Containers
# of live workers, and of other hosts, are left alone.
docker_sweep_dead_workers() {
    local id host pid swept=0
    while read -r id host pid; do
        [[ -n $id && $host == "$(hostname)" && -n $pid ]] || continue
        kill -0 "$pid" 2>/dev/null && continue
        docker rm -f "$id" >/dev/null 2>&1 && swept=$((swept + 1))
    done < <(docker ps -a --filter label=openshell.managed=true \
        --format '{{.ID}} {{.Label "openshell.host"}} {{.Label "openshell.pid"}}')
    [[ $swept -eq 0 ]] || note "removed $swept container(s) left by dead workers before this run"
}

# Fails when OpenShell containers are left on the engine (waits 15 s for removals in flight).
docker_assert_no_sandboxes() {
    local left tries
    for ((tries = 0; tries < 75; tries++)); do
        left=$(docker ps -aq --filter label=openshell.managed=true)
        [[ -z $left ]] && return 0
        sleep 0.2
    done
    docker ps -a --filter label=openshell.managed=true \
        --format '{{.ID}} {{.Status}} pool={{.Label "openshell.pool"}} worker={{.Label "openshell.worker"}}' >&2
    die "OpenShell containers were left behind (above); remove them with: docker rm -f \$(docker ps -aq --filter label=openshell.managed=true)"
}
