#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The crate boundaries ARCHITECTURE.md promises, checked with cargo metadata and cargo tree:
# the backend trait crate and one crate per backend exist; no backend crate depends on the
# worker; protocol and scheduler depend on no NATS, Docker or SSH crate.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib/common.sh
source deploy/lib/common.sh

members=$(cargo metadata --format-version 1 --no-deps --offline |
    python3 -c 'import json, sys; print(" ".join(p["name"] for p in json.load(sys.stdin)["packages"]))')
for crate in openshell-backend openshell-backend-docker openshell-backend-ssh openshell-backend-local; do
    [[ " $members " == *" $crate "* ]] || die "crate $crate is missing from the workspace"
done

# normal dependencies only, as a flat list of package names
deps() { cargo tree --offline -p "$1" -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u; }

for crate in openshell-backend openshell-backend-docker openshell-backend-ssh openshell-backend-local openshell-example-nice-backend; do
    if deps "$crate" | grep -qx 'openshell-worker'; then
        die "$crate depends on openshell-worker: backends must not know the worker"
    fi
done
for crate in openshell-protocol openshell-scheduler openshell-backend; do
    found=$(deps "$crate" | grep -xE 'async-nats|bollard|russh' || true)
    [[ -z $found ]] || die "$crate depends on $(echo "$found" | tr '\n' ' '): it must stay free of NATS, Docker and SSH"
done
say "crate boundaries hold"
