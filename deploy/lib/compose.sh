# shellcheck shell=bash
# docker-compose (Debian's package, v1) for the deploy tests: `docker-compose config`
# validates deploy/compose/docker-compose.yml offline, and its python3-yaml dependency parses
# the Kubernetes manifests. Needs lib/common.sh sourced first.

# Installs docker-compose unless it is on PATH.
compose_install() {
    if have docker-compose; then
        say "docker-compose already installed: $(command -v docker-compose)"
        return 0
    fi
    apt_install "the deploy tests (docker-compose config, python3-yaml)" docker-compose python3-yaml
}
