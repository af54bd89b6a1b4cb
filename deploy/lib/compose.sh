# shellcheck shell=bash
# The deploy tests' tools: docker-compose (Debian's package, v1), whose `docker-compose config`
# validates and renders deploy/compose/docker-compose.yml offline, and whose python3-yaml
# dependency reads YAML for the tests; kubernetes-validate (PyPI), which validates the
# Kubernetes manifests against Kubernetes' own schemas, shipped inside the package.
# Needs lib/common.sh sourced first.

# Where pip installs kubernetes-validate, apart from any Python environment.
K8S_VALIDATE_PREFIX=${OPENSHELL_PREFIX:-/opt/openshell}/kubernetes-validate

# Installs docker-compose unless it is on PATH.
compose_install() {
    if have docker-compose; then
        say "docker-compose already installed: $(command -v docker-compose)"
        return 0
    fi
    apt_install "the deploy tests (docker-compose config, python3-yaml)" docker-compose python3-yaml
}

# Installs kubernetes-validate unless it is on PATH, with a wrapper in /usr/local/bin that
# finds its own modules.
k8s_validate_install() {
    if have kubernetes-validate; then
        say "kubernetes-validate already installed: $(command -v kubernetes-validate)"
        return 0
    fi
    if ! python3 -m pip --version >/dev/null 2>&1; then
        apt_install "pip (to install kubernetes-validate)" python3 python3-pip
    fi
    local python
    python=$(python3 -c 'import sys; print(sys.executable)') || die "python3 does not run"
    say "installing kubernetes-validate (pip) into $K8S_VALIDATE_PREFIX"
    as_root env PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --disable-pip-version-check \
        --upgrade --target "$K8S_VALIDATE_PREFIX" kubernetes-validate ||
        die "pip could not install kubernetes-validate into $K8S_VALIDATE_PREFIX"
    as_root tee /usr/local/bin/kubernetes-validate >/dev/null <<WRAPPER
#!/bin/sh
# Written by deploy/setup.sh: kubernetes-validate from $K8S_VALIDATE_PREFIX.
PYTHONPATH="$K8S_VALIDATE_PREFIX\${PYTHONPATH:+:\$PYTHONPATH}" exec "$python" "$K8S_VALIDATE_PREFIX/bin/kubernetes-validate" "\$@"
WRAPPER
    as_root chmod 0755 /usr/local/bin/kubernetes-validate
    kubernetes-validate --version >/dev/null ||
        die "kubernetes-validate installed into $K8S_VALIDATE_PREFIX but does not run"
    say "installed kubernetes-validate: /usr/local/bin/kubernetes-validate"
}
