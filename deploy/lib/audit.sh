# shellcheck shell=bash
# The audit signing key: each worker signs checkpoints of its audit chain with an Ed25519 key
# (OPENSHELL_AUDIT_KEY, PKCS#8 PEM); auditors trust its public half (`openshell audit verify
# --key`). Needs lib/common.sh sourced first.

# Makes the key pair under $1 unless it exists: audit-key.pem (mode 600) and
# audit-key.pub.pem. Prints where they are.
audit_key_ensure() {
    local dir=$1
    local key="$dir/audit-key.pem" public="$dir/audit-key.pub.pem"
    mkdir -p "$dir"
    if [[ -s $key ]]; then
        say "audit signing key already exists: $key"
    else
        have openssl || apt_install "the audit signing key (Ed25519)" openssl
        (umask 077 && openssl genpkey -algorithm ed25519 -out "$key")
        say "made the audit signing key: $key"
    fi
    chmod 600 "$key"
    openssl pkey -in "$key" -pubout -out "$public"
    note "workers: OPENSHELL_AUDIT_KEY=$key"
    note "auditors trust: $public (openshell audit verify --key $public)"
}
