#!/usr/bin/env bash
# Durable mode on a 3-node NATS cluster: streams and buckets at 3 replicas against 1, the
# README's "Scaling past one machine" figures.
#
#   OUT=target/bench deploy/bench/cluster.sh
#
# It builds target/release/openshell first; OPENSHELL_BIN=PATH uses that binary instead.
# For each replica count it starts a fresh 3-node cluster (JetStream, loopback, no
# authentication) and runs the durable-core bench of deploy/bench/run.sh against all three
# nodes: one spawned worker, durable jobs alternating with core request/reply through the
# same worker. The streams are created by that worker, so each run starts from an empty
# cluster (a stream is never changed to other replicas in place).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=../lib/common.sh
source deploy/lib/common.sh

OUT=${OUT:-target/bench}
mkdir -p "$OUT"
bash deploy/setup.sh --install-only >/dev/null
bin=${OPENSHELL_BIN:-./target/release/openshell}
[[ -n ${OPENSHELL_BIN:-} ]] || cargo build --release --bin openshell >/dev/null

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cluster_pids=()
cluster_stop() {
    local pid
    for pid in "${cluster_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    cluster_pids=()
}
trap cluster_stop EXIT

# cluster_start DIR: three nodes routed to each other; sets CLUSTER_URL to all client URLs.
cluster_start() {
    local dir=$1 i clients=() routes=() route_list
    rm -rf "$dir"
    mkdir -p "$dir"
    for i in 0 1 2; do
        clients+=("$(free_port)")
        routes+=("nats://127.0.0.1:$(free_port)")
    done
    route_list=$(IFS=,; echo "${routes[*]}")
    for i in 0 1 2; do
        nats-server --name "bench-$i" -a 127.0.0.1 -p "${clients[$i]}" -js -sd "$dir/$i" \
            --cluster_name bench --cluster "${routes[$i]}" --routes "$route_list" >"$dir/$i.log" 2>&1 &
        cluster_pids+=($!)
    done
    CLUSTER_URL=$(printf 'nats://127.0.0.1:%s,' "${clients[@]}")
    CLUSTER_URL=${CLUSTER_URL%,}
    for _ in $(seq 150); do
        if grep -q "new metadata leader" "$dir"/*.log; then
            return 0
        fi
        sleep 0.2
    done
    die "the bench cluster elected no JetStream meta leader within 30 s (logs in $dir)"
}

# bench NAME REPLICAS: the durable-core run against a fresh cluster, streams at REPLICAS.
bench() {
    local name=$1 replicas=$2
    cluster_start "$OUT/$name-cluster"
    local args=(--pool none --spawn-workers 1 --command true --total 2000 --concurrency 8 --durable --baseline core)
    printf 'SANDBOX_BACKEND=none OPENSHELL_DURABLE_REPLICAS=%s NATS_URL=<3 nodes> openshell bench --json %s\n' \
        "$replicas" "${args[*]}" >"$OUT/$name.cmd"
    say "$name: $(cat "$OUT/$name.cmd")"
    env SANDBOX_BACKEND=none OPENSHELL_DURABLE_REPLICAS="$replicas" NATS_URL="$CLUSTER_URL" \
        "$bin" bench --json "${args[@]}" >"$OUT/$name.json"
    cluster_stop
}

bench cluster-r1 1
bench cluster-r3 3

field() { python3 -c "import json,sys; r=json.load(open('$OUT/$1.json')); print(eval(sys.argv[1], {}, r))" "$2"; }
row() { printf '| %s | %s | %s | %s | %s | %s |\n' "$@"; }
echo
echo "Machine: $(nproc) cores ($(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/Mem:/{print $2}') GiB," \
    "$(. /etc/os-release && echo "$PRETTY_NAME"), Linux $(uname -r), $(date -u +%Y-%m-%d); 3 nats-server nodes on loopback."
echo
row "run" "durable p50 / p95 / p99 ms" "core p50 / p95 / p99 ms" "p50 ratio" "durable throughput/s (ratio)" "command"
row "---" "---" "---" "---" "---" "---"
for name in cluster-r1 cluster-r3; do
    row "$name" "$(field "$name" "'%.2f / %.2f / %.2f' % (openshell['p50_ms'], openshell['p95_ms'], openshell['p99_ms'])")" \
        "$(field "$name" "'%.2f / %.2f / %.2f' % (baseline['p50_ms'], baseline['p95_ms'], baseline['p99_ms'])")" \
        "$(field "$name" "'%.2f' % ratio['p50']")" \
        "$(field "$name" "'%.0f (%.2f)' % (openshell['throughput_per_sec'], ratio['throughput'])")" \
        "\`$(cat "$OUT/$name.cmd")\`"
done
r1=$(field cluster-r1 "openshell['p50_ms']")
r3=$(field cluster-r3 "openshell['p50_ms']")
t1=$(field cluster-r1 "openshell['throughput_per_sec']")
t3=$(field cluster-r3 "openshell['throughput_per_sec']")
echo
python3 -c "print('Replicas 3 against 1: durable p50 %.2f x, throughput %.2f x.' % ($r3 / $r1, $t3 / $t1))"
