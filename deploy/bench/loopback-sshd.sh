# shellcheck shell=bash
# A throw-away OpenSSH server for the SSH rows of deploy/bench/run.sh, set up the way the SSH
# tests do it (test-support/src/sshd.rs): this machine prepared as a job host by
# deploy/ssh-host/prepare.sh (transport user openshell-bench, sandbox helper, job uids), its
# own host key, a temporary client key, a known_hosts file, listening on 127.0.0.1 only.
# Needs lib/common.sh and lib/ssh.sh sourced first, and root (sshd, prepare.sh).

BENCH_SSH_USER=openshell-bench

# loopback_sshd_start DIR: starts the server with its files in DIR and exports the SSH_*
# variables the worker and the ssh baselines read. Sets LOOPBACK_SSHD_PID.
loopback_sshd_start() {
    local dir port
    dir=$(realpath -m "$1") # sshd wants absolute paths
    [[ $(id -u) -eq 0 ]] || die "the SSH rows start a loopback sshd and create user $BENCH_SSH_USER: run as root, or set SSH_HOST to a prepared host"
    ssh_install >/dev/null
    rm -rf "$dir"
    install -d -m 755 "$dir"
    ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
    ssh-keygen -q -t ed25519 -N '' -f "$dir/client_key"
    say "preparing this machine as an SSH job host for $BENCH_SSH_USER (deploy/ssh-host/prepare.sh)"
    bash deploy/ssh-host/prepare.sh --pubkey "$dir/client_key.pub" --user "$BENCH_SSH_USER" >"$dir/prepare.log" 2>&1 ||
        die "deploy/ssh-host/prepare.sh failed; see $dir/prepare.log"
    port=$(free_port)
    cat >"$dir/sshd_config" <<CONFIG
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_key
PidFile none
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $BENCH_SSH_USER
MaxStartups 100:30:200
Include /etc/ssh/sshd_config.d/openshell-$BENCH_SSH_USER.conf
CONFIG
    printf '[127.0.0.1]:%s %s\n' "$port" "$(cut -d' ' -f1,2 "$dir/host_key.pub")" >"$dir/known_hosts"
    mkdir -p /run/sshd
    "$SSHD_BIN" -D -e -f "$dir/sshd_config" </dev/null >/dev/null 2>"$dir/sshd.log" &
    LOOPBACK_SSHD_PID=$!
    local tries=0
    until ssh-keyscan -p "$port" 127.0.0.1 >/dev/null 2>&1; do
        tries=$((tries + 1))
        [[ $tries -lt 50 ]] || die "the loopback sshd did not answer on port $port; see $dir/sshd.log"
        sleep 0.2
    done
    export SSH_HOST=127.0.0.1 SSH_PORT=$port SSH_USER=$BENCH_SSH_USER \
        SSH_KEY_PATH=$dir/client_key SSH_KNOWN_HOSTS=$dir/known_hosts
    say "loopback sshd on 127.0.0.1:$port (pid $LOOPBACK_SSHD_PID), transport user $BENCH_SSH_USER, jobs in the prepared sandbox"
}

# A free TCP port on the loopback interface.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
