#!/usr/bin/env bash
# Reproduces the README's performance table on this machine.
#
#   OUT=target/bench deploy/bench/run.sh
#
# It builds target/release/openshell first; OPENSHELL_BIN=PATH uses that binary instead.
#
# Starts its own nats-server (JetStream) on a free loopback port, drives workers spawned by
# `openshell bench`, and prints a Markdown table with each row's exact command line, plus
# the raw JSON reports (in $OUT, default target/bench). Docker rows run when dockerd answers
# and the sandbox image exists: `true` and Python at concurrency 1 and = slots against
# `docker run --rm`, and the Python job against itself on the local backend (one worker serving
# both pools from a two-pool config file), with the warm pool's hit rate. SSH rows run against SSH_HOST (with SSH_USER, SSH_KEY_PATH,
# SSH_PORT, SSH_KNOWN_HOSTS) when it is set, and otherwise against a throw-away sshd this
# script starts on 127.0.0.1 (needs root: it creates the unprivileged user openshell-bench).
# All traffic stays on loopback unless SSH_HOST names another host. Nothing here is a test:
# figures are ratios against the raw operation measured in the same run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=../lib/common.sh
source deploy/lib/common.sh
# shellcheck source=../lib/ssh.sh
source deploy/lib/ssh.sh
# shellcheck source=loopback-sshd.sh
source deploy/bench/loopback-sshd.sh

OUT=${OUT:-target/bench}
mkdir -p "$OUT"
bash deploy/setup.sh --install-only >/dev/null
bin=${OPENSHELL_BIN:-./target/release/openshell}
[[ -n ${OPENSHELL_BIN:-} ]] || cargo build --release --bin openshell >/dev/null

# kill_tree PID: stops a process this script started and everything below it (sshd's
# per-connection processes, too).
kill_tree() {
    local child
    for child in $(ps -o pid= --ppid "$1"); do
        kill_tree "$child"
    done
    kill "$1" 2>/dev/null || true
}
pids=()
cleanup() {
    for pid in "${pids[@]}" ${LOOPBACK_SSHD_PID:-}; do
        kill_tree "$pid"
    done
}
trap cleanup EXIT
rm -rf "$OUT/js"
port=$(free_port)
nats-server -a 127.0.0.1 -p "$port" -js -sd "$OUT/js" >"$OUT/nats.log" 2>&1 &
pids+=($!)
sleep 1
export NATS_URL=nats://127.0.0.1:$port

# bench NAME ENV=VALUE... -- ARGS...: one run, its JSON saved as $OUT/NAME.json and its
# command line as $OUT/NAME.cmd.
bench() {
    local name=$1 envs=()
    shift
    while [[ $1 != -- ]]; do
        envs+=("$1")
        shift
    done
    shift
    local line="${envs[*]} openshell bench --json" arg
    for arg in "$@"; do
        if [[ $arg =~ [^A-Za-z0-9_./=:,-] ]]; then line+=" '$arg'"; else line+=" $arg"; fi
    done
    printf '%s\n' "$line" >"$OUT/$name.cmd"
    say "$name: $line"
    env "${envs[@]}" "$bin" bench --json "$@" >"$OUT/$name.json"
}

field() { python3 -c "import json,sys; r=json.load(open('$OUT/$1.json')); print(eval(sys.argv[1], {}, r))" "$2"; }
# shellcheck disable=SC2016 # the backticks are Markdown
cmd() { printf '`%s`' "$(cat "$OUT/$1.cmd")"; }
row() { printf '| %s | %s | %s | %s | %s | %s |\n' "$@"; }

bench local-true SANDBOX_BACKEND=none -- --pool none --spawn-workers 1 --command true --total 3000 --concurrency 8 --baseline exec
bench local-python SANDBOX_BACKEND=none -- --pool none --spawn-workers 1 --lang python --code 'print(1)' --total 500 --concurrency 4 --baseline exec
bench local-inflight SANDBOX_BACKEND=none -- --pool none --spawn-workers 1 --slots 1000 --command 'sleep 2' --total 2000 --concurrency 1000 --warmup 0
bench durable-core SANDBOX_BACKEND=none -- --pool none --spawn-workers 1 --command true --total 2000 --concurrency 8 --durable --baseline core
for n in 1 2 4; do
    bench "scale-$n" SANDBOX_BACKEND=none -- --pool none --spawn-workers "$n" --slots 16 --command 'sleep 0.1' --duration 10s --concurrency 128
done
# The same without the bubblewrap sandbox (`sandbox = "off"`, development only): what the
# worker itself costs over fork/exec, and how workers scale when the jobs do not use the cores.
printf '[pools.none]\nbackend = "none"\n[pools.none.local]\nsandbox = "off"\n' >"$OUT/unsandboxed.toml"
bench local-true-bare OPENSHELL_CONFIG="$OUT/unsandboxed.toml" -- --pool none --spawn-workers 1 --command true --total 3000 --concurrency 8 --baseline exec
for n in 1 2 4; do
    bench "scale-$n-bare" OPENSHELL_CONFIG="$OUT/unsandboxed.toml" -- --pool none --spawn-workers "$n" --slots 16 --command 'sleep 0.1' --duration 10s --concurrency 128
done

docker_ok=false
if docker info >/dev/null 2>&1 && docker image inspect openshell-sandbox:latest >/dev/null 2>&1; then
    docker_ok=true
    bench docker-warm SANDBOX_BACKEND=docker -- --pool docker --spawn-workers 1 --command true --total 80 --concurrency 1 --baseline docker-run
    bench docker-python SANDBOX_BACKEND=docker -- --pool docker --spawn-workers 1 --lang python --code 'print(1)' --total 80 --concurrency 1 --baseline docker-run
    # Concurrency = slots: every slot busy, each job still in a fresh container.
    slots=$(($(nproc) * 4))
    bench docker-slots SANDBOX_BACKEND=docker -- --pool docker --spawn-workers 1 --slots "$slots" --command true --total 160 --concurrency "$slots" --baseline docker-run
    bench docker-python-slots SANDBOX_BACKEND=docker -- --pool docker --spawn-workers 1 --slots "$slots" --lang python --code 'print(1)' --total 160 --concurrency "$slots" --baseline docker-run
    # The same Python job on the local backend, through the same worker, alternating: what the
    # container costs over the job itself.
    printf '[pools.docker]\nbackend = "docker"\n[pools.none]\nbackend = "none"\n' >"$OUT/two-pools.toml"
    bench docker-over-local OPENSHELL_CONFIG="$OUT/two-pools.toml" -- --pool docker --spawn-workers 1 --lang python --code 'print(1)' --total 80 --concurrency 1 --baseline pool --baseline-pool none
else
    warn "no Docker rows: dockerd does not answer or openshell-sandbox:latest is missing (deploy/setup.sh builds it)"
fi

if [[ -z ${SSH_HOST:-} ]]; then
    loopback_sshd_start "$OUT/sshd"
fi
bench ssh-fresh SANDBOX_BACKEND=ssh -- --pool ssh --spawn-workers 1 --command true --total 200 --concurrency 4 --baseline ssh
bench ssh-mux SANDBOX_BACKEND=ssh -- --pool ssh --spawn-workers 1 --command true --total 400 --concurrency 4 --baseline ssh-mux
bench ssh-mux-1 SANDBOX_BACKEND=ssh -- --pool ssh --spawn-workers 1 --command true --total 200 --concurrency 1 --baseline ssh-mux

echo
echo "Machine: $(nproc) cores ($(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/Mem:/{print $2}') GiB," \
    "$(. /etc/os-release && echo "$PRETTY_NAME"), Linux $(uname -r), $(date -u +%Y-%m-%d)." \
    "SSH_HOST=$SSH_HOST. Each command ran with NATS_URL pointing at this script's nats-server."
echo
row "run" "OpenShell p50 / p95 / p99 ms" "raw p50 / p95 / p99 ms" "p50 ratio" "throughput/s (ratio)" "command"
row "---" "---" "---" "---" "---" "---"
ratio_row() {
    row "$1" "$(field "$1" "'%.2f / %.2f / %.2f' % (openshell['p50_ms'], openshell['p95_ms'], openshell['p99_ms'])")" \
        "$(field "$1" "'%.2f / %.2f / %.2f' % (baseline['p50_ms'], baseline['p95_ms'], baseline['p99_ms'])") ($2)" \
        "$(field "$1" "'%.2f' % ratio['p50']")" \
        "$(field "$1" "'%.0f (%.2f)' % (openshell['throughput_per_sec'], ratio['throughput'])")" \
        "$(cmd "$1")"
}
ratio_row local-true "fork/exec"
ratio_row local-python "fork/exec"
ratio_row local-true-bare "fork/exec"
ratio_row durable-core "core request/reply"
if $docker_ok; then
    for name in docker-warm docker-python docker-slots docker-python-slots; do
        ratio_row "$name" "docker run --rm"
    done
    ratio_row docker-over-local "same job, local backend"
fi
ratio_row ssh-fresh "fresh ssh"
ratio_row ssh-mux "ssh ControlMaster"
ratio_row ssh-mux-1 "ssh ControlMaster"
echo
if $docker_ok; then
    echo "Docker over local (docker-over-local): p50 overhead" \
        "$(field docker-over-local "'%.1f ms (p95 %.1f ms)' % (openshell['p50_ms'] - baseline['p50_ms'], openshell['p95_ms'] - baseline['p95_ms'])")."
    hits() { field "$1" "'%.0f%% (%d of %d)' % (100 * warm_pool['hit_rate'], warm_pool['hits'], warm_pool['hits'] + warm_pool['misses']) if warm_pool else 'not read'"; }
    echo "Warm pool hit rate over the measured jobs: docker-warm $(hits docker-warm), docker-python $(hits docker-python)," \
        "docker-slots $(hits docker-slots), docker-python-slots $(hits docker-python-slots), docker-over-local $(hits docker-over-local)."
    echo
fi
share() { field "$1" "'%.3f ms, %.1f%% of the mean %.2f ms' % ($2['audit_mean_ms'], 100 * $2['audit_share'], $3['mean_ms']) if $2 and $2.get('audit_share') is not None else 'not exposed by this worker'"; }
echo "Audit-before-run (the \`received\` event acknowledged before the job starts), from durable-core:"
echo "core $(share durable-core baseline_overhead baseline); durable $(share durable-core overhead openshell)."
echo
echo "Worker memory: idle $(field local-true "'%.1f' % (worker['rss_idle_bytes']/1048576)") MiB ($(cmd local-true));" \
    "peak with 1,000 jobs in flight $(field local-inflight "'%.1f' % (worker['rss_peak_bytes']/1048576)") MiB" \
    "($(field local-inflight "openshell['verdicts']"); $(cmd local-inflight))."
echo
echo "Scale-out (sleep 0.1 s jobs, 16 slots per worker, 10 s):"
for n in 1 2 4; do
    echo "- $n worker(s): $(field "scale-$n" "'%.0f jobs/s' % openshell['throughput_per_sec']") ($(cmd "scale-$n"));" \
        "unsandboxed $(field "scale-$n-bare" "'%.0f jobs/s' % openshell['throughput_per_sec']") ($(cmd "scale-$n-bare"))"
done

# Sessions (issue 16): a call in a warm session against a fresh job on the same pool, call by
# call; the README's session table.
echo
bench session-none-trivial SANDBOX_BACKEND=none -- --pool none --spawn-workers 1 --session --lang python --code 'print(1)' --total 60 --warmup 5
bench session-none-imports SANDBOX_BACKEND=none -- --pool none --spawn-workers 1 --session --lang python \
    --code 'import json, decimal, email.parser, http.client, asyncio; print(1)' --total 60 --warmup 5
sessions=(session-none-trivial session-none-imports)
if $docker_ok; then
    bench session-docker-trivial SANDBOX_BACKEND=docker -- --pool docker --spawn-workers 1 --session --lang python --code 'print(1)' --total 60 --warmup 5
    bench session-docker-imports SANDBOX_BACKEND=docker -- --pool docker --spawn-workers 1 --session --lang python \
        --code 'import json, decimal, email.parser, http.client, asyncio; print(1)' --total 60 --warmup 5
    sessions+=(session-docker-trivial session-docker-imports)
fi
echo "Sessions (session ÷ fresh job, p50):"
for name in "${sessions[@]}"; do
    echo "- $name: $(field "$name" "'session %.1f / %.1f ms, fresh %.1f / %.1f ms (p50 / p90), ratio %.2f' % (session_p50_ms, session_p90_ms, fresh_p50_ms, fresh_p90_ms, ratio_p50)") ($(cmd "$name"))"
done
