#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The test command: installs the tools the tests need, then format, lint and
# tests. Tests start their own nats-server on free ports. Stops at the first
# failing step and names it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib/common.sh
source deploy/lib/common.sh
# shellcheck source=lib/docker.sh
source deploy/lib/docker.sh

# Under CI, tests fail instead of skipping when a service binary is missing.
if [[ -n ${CI:-} ]]; then
    export CI
fi

step() {
    local name=$1
    shift
    say "$name: $*"
    "$@" || die "step failed: $name (command: $*)"
}

have cargo || die "cargo not found: install the Rust toolchain (rustup) first"

step "setup" bash deploy/setup.sh --install-only
# The docker backend's tests need the host's dockerd and the sandbox image.
step "docker" bash deploy/setup.sh --no-nats
step "stale sandboxes" docker_sweep_dead_workers
step "format" cargo fmt --all -- --check
step "lint" cargo clippy --workspace --all-targets -- -D warnings
step "crate boundaries" bash deploy/check-architecture.sh
# Each alert fires on the series that should raise it and stays silent otherwise.
step "alert rules" promtool test rules deploy/prometheus/alerts.test.yml
if have cargo-nextest; then
    step "tests" cargo nextest run --workspace
    step "doc tests" cargo test --workspace --doc
else
    note "cargo-nextest not installed: using cargo test"
    step "tests" cargo test --workspace
fi
step "no sandbox left" docker_assert_no_sandboxes
say "all steps passed"
