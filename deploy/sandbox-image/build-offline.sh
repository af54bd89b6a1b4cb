#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Builds the OpenShell sandbox image without any image registry: debootstrap (minbase, plus
# packages.txt) from the Debian mirror this host's apt already uses, then `docker import` with
# the same user, working directory, environment and labels as the Dockerfile beside it.
# Needs root and a running Docker daemon. deploy/setup.sh runs it when the image is missing.
#
#   deploy/sandbox-image/build-offline.sh [IMAGE]     IMAGE defaults to openshell-sandbox:latest
#
# The root filesystem is cached as a tarball named after a hash of the suite, the mirror, the
# package list and RECIPE below, so a rerun (or a rebuild after `docker rmi`) takes seconds;
# concurrent runs wait for each other instead of building twice.
#   OPENSHELL_CACHE_DIR   where the tarball is kept (default /var/cache/openshell)
#   DEBIAN_MIRROR         mirror to use instead of the one apt uses
#   DEBIAN_SUITE          suite to use instead of this host's (from /etc/os-release)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/common.sh
source "$here/../lib/common.sh"

# Bump when the root filesystem would come out different for the same suite and packages.
RECIPE=1

image=${1:-openshell-sandbox:latest}
cache_dir=${OPENSHELL_CACHE_DIR:-/var/cache/openshell}
packages=$(grep -v '^#' "$here/packages.txt" | xargs | tr ' ' ',')

# Prints the URI of the first `deb` source for suite $1, in deb822 files then one-line lists.
apt_mirror() {
    local suite=$1 file found=""
    for file in /etc/apt/sources.list.d/*.sources; do
        [[ -r $file && -z $found ]] || continue
        found=$(awk -v want="$suite" '
            BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; uris = ""; suites = ""
                for (i = 1; i <= NF; i++) {
                    key = $i; sub(/:.*/, "", key)
                    value = $i; sub(/^[^:]*:[ \t]*/, "", value)
                    if (key == "Types") types = value
                    if (key == "URIs") uris = value
                    if (key == "Suites") suites = value
                }
                if (types !~ /(^| )deb( |$)/) next
                n = split(suites, list, " ")
                for (j = 1; j <= n; j++) if (list[j] == want) { split(uris, uri, " "); print uri[1]; exit }
            }' "$file")
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $file && -z $found ]] || continue
        found=$(sed -n 's/\[[^]]*\]//; s/^[[:space:]]*deb[[:space:]]\+//p' "$file" |
            awk -v want="$suite" '$2 == want { print $1; exit }')
    done
    echo "$found"
}

suite=${DEBIAN_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-}")}
[[ -n $suite ]] || die "cannot tell this host's Debian suite: set DEBIAN_SUITE (e.g. bookworm)"
mirror=${DEBIAN_MIRROR:-$(apt_mirror "$suite")}
[[ -n $mirror ]] || die "no apt source for suite '$suite' in /etc/apt/sources.list{,.d/*}: set DEBIAN_MIRROR"

key=$(printf '%s\n' "$suite" "$mirror" "$packages" "$RECIPE" | sha256sum | cut -c1-16)
rootfs_tar="$cache_dir/sandbox-rootfs-$suite-$key.tar"

# Unmounts whatever debootstrap left mounted under $1, then removes it.
remove_tree() {
    local mounts
    mounts=$(awk -v root="$1" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r)
    [[ -z $mounts ]] || xargs -r umount -l <<<"$mounts" || true
    rm -rf --one-file-system "$1"
}

build_rootfs() {
    have debootstrap || apt_install "the offline sandbox image builder" debootstrap
    [[ $(id -u) -eq 0 ]] || die "debootstrap needs root: run as root"
    local work rootfs
    # On the cache's filesystem, so the finished tarball is moved into place, not copied.
    work=$(mktemp -d "$cache_dir/rootfs.XXXXXX")
    # shellcheck disable=SC2064 # expand now: the trap must remove this very directory
    trap "remove_tree '$work'" EXIT
    rootfs="$work/rootfs"
    say "debootstrap $suite (minbase + $packages) from $mirror: a few minutes, once"
    debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" \
        >"$work/debootstrap.log" 2>&1 || {
        tail -n 30 "$work/debootstrap.log" >&2
        die "debootstrap failed (log above); check that $mirror answers, or set DEBIAN_MIRROR"
    }
    chroot "$rootfs" groupadd --gid 1000 sandbox
    chroot "$rootfs" useradd --uid 1000 --gid 1000 --home-dir /workspace --no-create-home \
        --shell /bin/bash sandbox
    mkdir -p "$rootfs/workspace"
    chown 1000:1000 "$rootfs/workspace"
    # What a sandbox never needs: package caches and indexes, docs, logs.
    rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
        "$rootfs"/var/log/* "$rootfs"/tmp/*
    tar -C "$rootfs" --numeric-owner -cf "$work/rootfs.tar" .
    mv "$work/rootfs.tar" "$rootfs_tar"
    remove_tree "$work"
    trap - EXIT
    say "cached the root filesystem: $rootfs_tar ($(du -h "$rootfs_tar" | cut -f1))"
}

have docker || die "the docker client is missing: run deploy/setup.sh (installs docker.io)"
docker info >/dev/null 2>&1 || die "no Docker daemon answers${DOCKER_HOST:+ at $DOCKER_HOST}: run deploy/setup.sh"

mkdir -p "$cache_dir"
exec 9>"$cache_dir/.sandbox-rootfs.lock"
flock 9 || die "cannot lock $cache_dir/.sandbox-rootfs.lock"
if [[ -f $rootfs_tar ]]; then
    say "using the cached root filesystem $rootfs_tar"
else
    build_rootfs
fi
flock -u 9

say "docker import $image"
docker import \
    --change 'USER 1000:1000' \
    --change 'WORKDIR /workspace' \
    --change 'ENV LANG=C.UTF-8 PATH=/usr/local/bin:/usr/bin:/bin' \
    --change 'LABEL org.opencontainers.image.title="openshell-sandbox"' \
    --change 'LABEL org.opencontainers.image.description="OpenShell job sandbox: python3, node, bash, coreutils; user sandbox (1000:1000)"' \
    --change 'LABEL io.openshell.sandbox.user="sandbox" io.openshell.sandbox.workdir="/workspace"' \
    --change "LABEL io.openshell.sandbox.built-from=\"debootstrap $suite $key\"" \
    --change 'CMD ["sleep", "infinity"]' \
    --message "openshell sandbox: debootstrap $suite minbase + $packages" \
    "$rootfs_tar" "$image" >/dev/null
say "built $image offline: $(docker image inspect --format '{{.Id}} {{.Size}} bytes' "$image")"
