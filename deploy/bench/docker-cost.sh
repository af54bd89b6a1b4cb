#!/usr/bin/env bash
# What one fresh container costs the Docker daemon on this machine: N containers of the
# sandbox image created, started and removed one after another (`--network none`, plus any
# `docker create` options given after --), with the wall time and the CPU time dockerd and
# containerd spent per container, and the whole machine's CPU time per container (which
# includes containerd-shim, runc and the kernel).
#
#   deploy/bench/docker-cost.sh [N] [-- DOCKER-CREATE-OPTIONS...]
#
# Nothing here is a test; the README's Performance section quotes it for the bound on
# concurrency = slots.
set -euo pipefail

n=${1:-20}
shift || true
[[ ${1:-} == -- ]] && shift
image=${OPENSHELL_IMAGE:-openshell-sandbox:latest}
daemon_cpu() { # clock ticks of user + system time of dockerd and containerd
    local pid total=0
    for pid in $(pgrep -x dockerd) $(pgrep -x containerd); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}
machine_cpu() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
tick_ms=$((1000 / $(getconf CLK_TCK)))
d0=$(daemon_cpu) m0=$(machine_cpu) t0=$(date +%s%N)
for _ in $(seq "$n"); do
    id=$(docker create --network none "$@" "$image" sh -c 'exec sleep infinity')
    docker start "$id" >/dev/null
    docker rm -f "$id" >/dev/null
done
t1=$(date +%s%N) d1=$(daemon_cpu) m1=$(machine_cpu)
echo "$n containers of $image: wall $(((t1 - t0) / n / 1000000)) ms each;" \
    "dockerd + containerd CPU $(((d1 - d0) * tick_ms / n)) ms each;" \
    "whole machine CPU $(((m1 - m0) * tick_ms / n)) ms each (docker CLI included)"
