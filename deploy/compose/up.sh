#!/usr/bin/env bash
# Starts deploy/compose with one command: a 3-node NATS cluster with the accounts of
# deploy/nats/accounts.conf, two durable workers, Prometheus and Grafana.
#   deploy/compose/up.sh            # extra arguments go to `docker compose up`
#   docker compose -f deploy/compose/docker-compose.yml down   # stops it (add -v to drop data)
# The first run writes deploy/compose/.env (mode 600, never committed): a random password per
# NATS user and for Grafana's admin, and the host's docker group id. Agents connect as
# agent-<tenant> with the password from that file, e.g.
#   NATS_USER=agent-acme NATS_PASSWORD=... openshell exec --tenant acme --lang python -c 'print(1)'
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
env_file="$here/.env"

die() {
    echo "up.sh: $*" >&2
    exit 1
}

secret() {
    head -c 24 /dev/urandom | base64 | tr -d '/+='
}

if [[ ! -f $env_file ]]; then
    docker_gid=$(getent group docker | cut -d: -f3) ||
        die "no docker group on this host: the workers need the Docker socket's group"
    (
        umask 077
        {
            echo "# Written by up.sh; the NATS users' and Grafana's passwords."
            for name in OPENSHELL_WORKER_PASSWORD OPENSHELL_AUDITOR_PASSWORD OPENSHELL_SYS_PASSWORD \
                OPENSHELL_AGENT_ACME_PASSWORD OPENSHELL_AGENT_GLOBEX_PASSWORD GRAFANA_ADMIN_PASSWORD; do
                echo "$name=$(secret)"
            done
            echo "DOCKER_GID=$docker_gid"
        } >"$env_file"
    )
    echo "up.sh: wrote $env_file"
fi

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose)
else
    die "neither 'docker compose' nor docker-compose found: install the compose plugin"
fi

# The workers start every job's container from this image on the host's Docker.
if ! docker image inspect openshell-sandbox:latest >/dev/null 2>&1; then
    echo "up.sh: building the sandbox image openshell-sandbox:latest"
    docker build -t openshell-sandbox:latest "$here/../sandbox-image" ||
        die "cannot build the sandbox image; without a registry use deploy/sandbox-image/build-offline.sh"
fi

exec "${compose[@]}" --project-directory "$here" -f "$here/docker-compose.yml" up -d --build "$@"
