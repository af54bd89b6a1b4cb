# shellcheck shell=bash
# OpenSSH for the SSH backend: the client tools (ssh-keygen, ssh-keyscan) the worker's
# operators use, and what the SSH backend's tests need on this machine: the server binary
# they start on their own loopback port, and sudo and bubblewrap for the job sandbox that
# deploy/ssh-host/prepare.sh (run by the tests) sets up. The system sshd service is never
# started here.
# Needs lib/common.sh sourced first.

SSHD_BIN=/usr/sbin/sshd

# Installs openssh-server, openssh-client, sudo and bubblewrap unless present, without
# starting sshd.
ssh_install() {
    if [[ -x $SSHD_BIN ]] && have ssh-keygen && have ssh-keyscan && have sudo && have bwrap; then
        say "openssh-server, sudo and bubblewrap already installed: $SSHD_BIN"
        return 0
    fi
    # A policy-rc.d that answers 101 keeps the package from starting a system sshd on port 22.
    local policy=/usr/sbin/policy-rc.d own_policy=no
    if [[ ! -e $policy ]]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        own_policy=yes
    fi
    local ok=yes
    apt_install "the SSH backend (sshd, sudo and bubblewrap for its tests, ssh-keygen, ssh-keyscan)" \
        openssh-server openssh-client sudo bubblewrap || ok=no
    if [[ $own_policy == yes ]]; then
        as_root rm -f "$policy"
    fi
    [[ $ok == yes && -x $SSHD_BIN ]] || die "openssh-server did not install $SSHD_BIN"
    have bwrap && have sudo || die "sudo and bubblewrap did not install"
    say "installed openssh-server, sudo and bubblewrap: $SSHD_BIN (not started; tests start their own)"
}
