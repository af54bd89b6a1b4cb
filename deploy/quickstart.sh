#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The main job: set up this host, build the release binary and run one
# OpenShell worker in the foreground on the default backend.
#
# NATS_URL (default nats://127.0.0.1:4222): the NATS server to serve. Any
# other URL means you run that server yourself, so none is started here.
# SANDBOX_BACKEND and the worker's other variables pass through unchanged.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib/common.sh
source deploy/lib/common.sh

default_url=nats://127.0.0.1:4222
export NATS_URL=${NATS_URL:-$default_url}

if [[ $NATS_URL == "$default_url" ]]; then
    bash deploy/setup.sh
else
    note "NATS_URL=$NATS_URL: not starting a local nats-server"
    bash deploy/setup.sh --no-nats
fi

have cargo || die "cargo not found: install the Rust toolchain (rustup) first"
say "building the release binary"
cargo build --release --bin openshell || die "release build failed (errors above)"

# The audit signing key deploy/setup.sh made (unless the caller named one).
export OPENSHELL_AUDIT_KEY=${OPENSHELL_AUDIT_KEY:-${OPENSHELL_STATE_DIR:-$(default_state_dir)}/audit-key.pem}

say "starting the worker on $NATS_URL (Ctrl-C stops it)"
note "try it from another terminal:"
note "./target/release/openshell exec --lang python -c 'print(6*7)'"
exec ./target/release/openshell worker
