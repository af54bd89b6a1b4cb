#!/usr/bin/env bash
# Reproduces the README's performance table on this machine.
#
# Starts its own nats-server on a free loopback port, drives workers spawned by
# `openshell bench`, and prints a Markdown table plus the raw JSON reports (in
# $OUT, default target/bench). Docker rows run when dockerd answers and the
# sandbox image exists; SSH rows when SSH_HOST (and SSH_USER, SSH_KEY_PATH,
# SSH_PORT, SSH_KNOWN_HOSTS) name a prepared host. Nothing here is a test:
# figures are ratios against the raw operation measured in the same run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=../lib/common.sh
source deploy/lib/common.sh

OUT=${OUT:-target/bench}
mkdir -p "$OUT"
bash deploy/setup.sh --install-only >/dev/null
cargo build --release --bin openshell >/dev/null
bin=./target/release/openshell

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nats-server -a 127.0.0.1 -p "$port" -js -sd "$OUT/js" >"$OUT/nats.log" 2>&1 &
nats_pid=$!
trap 'kill $nats_pid 2>/dev/null || true' EXIT
sleep 1
export NATS_URL=nats://127.0.0.1:$port

# bench NAME ARGS...: one run, its JSON saved as $OUT/NAME.json.
bench() {
    local name=$1
    shift
    say "$name: openshell bench $*"
    "$bin" bench --json "$@" >"$OUT/$name.json"
}

field() { python3 -c "import json,sys; r=json.load(open('$OUT/$1.json')); print(eval(sys.argv[1], {}, r))" "$2"; }
row() { printf '| %s | %s | %s | %s | %s |\n' "$@"; }

SANDBOX_BACKEND=none bench local-true --pool none --spawn-workers 1 --command true --total 3000 --concurrency 8 --baseline exec
SANDBOX_BACKEND=none bench local-python --pool none --spawn-workers 1 --lang python --code 'print(1)' --total 500 --concurrency 4 --baseline exec
SANDBOX_BACKEND=none bench local-inflight --pool none --spawn-workers 1 --slots 1000 --command 'sleep 2' --total 2000 --concurrency 1000 --warmup 0
for n in 1 2 4; do
    SANDBOX_BACKEND=none bench "scale-$n" --pool none --spawn-workers "$n" --slots 16 --command 'sleep 0.1' --duration 10s --concurrency 128
done

docker_ok=false
if docker info >/dev/null 2>&1 && docker image inspect openshell-sandbox:latest >/dev/null 2>&1; then
    docker_ok=true
    SANDBOX_BACKEND=docker bench docker-warm --pool docker --spawn-workers 1 --command true --total 200 --concurrency 4 --baseline docker-run
fi

ssh_ok=false
if [[ -n ${SSH_HOST:-} ]]; then
    ssh_ok=true
    SANDBOX_BACKEND=ssh bench ssh-fresh --pool ssh --spawn-workers 1 --command true --total 200 --concurrency 4 --baseline ssh
    SANDBOX_BACKEND=ssh bench ssh-mux --pool ssh --spawn-workers 1 --command true --total 400 --concurrency 4 --baseline ssh-mux
fi

echo
echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr), $(date -u +%Y-%m-%d)"
echo
row "run" "openshell p50 / p99 ms" "raw p50 / p99 ms" "p50 ratio" "throughput/s (ratio)"
row "---" "---" "---" "---" "---"
ratio_row() {
    row "$1" "$(field "$1" "'%.2f / %.2f' % (openshell['p50_ms'], openshell['p99_ms'])")" \
        "$(field "$1" "'%.2f / %.2f' % (baseline['p50_ms'], baseline['p99_ms'])") ($2)" \
        "$(field "$1" "'%.2f' % ratio['p50']")" \
        "$(field "$1" "'%.0f (%.2f)' % (openshell['throughput_per_sec'], ratio['throughput'])")"
}
ratio_row local-true "fork/exec"
ratio_row local-python "fork/exec"
$docker_ok && ratio_row docker-warm "docker run --rm"
$ssh_ok && ratio_row ssh-fresh "fresh ssh"
$ssh_ok && ratio_row ssh-mux "ssh ControlMaster"
echo
echo "Worker memory: idle $(field local-true "'%.1f' % (worker['rss_idle_bytes']/1048576)") MiB;" \
    "peak with 1,000 jobs in flight $(field local-inflight "'%.1f' % (worker['rss_peak_bytes']/1048576)") MiB" \
    "($(field local-inflight "openshell['verdicts']"))"
echo
echo "Scale-out (sleep 0.1 s jobs, 16 slots per worker, 10 s):"
for n in 1 2 4; do
    echo "- $n worker(s): $(field "scale-$n" "'%.0f jobs/s' % openshell['throughput_per_sec']")"
done
