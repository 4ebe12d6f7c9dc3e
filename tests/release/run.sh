#!/usr/bin/env bash
# The release tier: every module that touches python-apt, dpkg, JSON from the network, TLS or
# certificates, tested on each Debian release the agent supports, and the demo run there.
#
#   tests/release/run.sh                      # Debian 11, 12 and 13, one after the other
#   tests/release/run.sh bullseye trixie      # some of them
#
# For each release: a root extracted once from scripts/debian-root.sh's cached debootstrap
# (the test command's Debian packages installed) and kept in $RELEASE_ROOTS_DIR (default
# /var/cache/iot-jobs-agent-tests/release-roots; made again when that cache changes), this
# checkout's files copied into it (tracked and untracked, not ignored), then in
# `systemd-nspawn --pipe` (no boot; --register=no --keep-unit; the host's network namespace,
# the tests use loopback only): the virtual environment (scripts/setup.sh's ensure_venv, kept
# in the root and reinstalled only when a requirement file changes), the pytest subset below,
# and `./start.sh --local --demo`.
# Needs root, systemd-nspawn and debootstrap; without them it says why and skips (exit 0).
# Exit status: 0 passed or skipped, 1 a release failed.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$here" || exit 1

# The subset, by what it covers (each file runs on every release):
#   python-apt and dpkg: the APT handler, its worker, removals, documents, end to end, faults,
#     the managed templates' package installs and removals
#   JSON from the network: service messages, hostile documents and protocol, managed
#     documents, statusDetails, signed documents, the recorded answers to hostile documents
#   TLS and certificates: the agent's TLS, the local broker's certificates and mutual TLS,
#     signature checks (python3-cryptography)
SUBSET=(
    tests/test_apt_handler.py tests/test_apt_remove.py tests/test_apt_document.py
    tests/test_apt_e2e.py tests/test_agent_apt_e2e.py tests/test_faults_apt.py
    tests/test_managed_packages.py tests/test_apt_progress.py
    tests/test_agent_messages.py tests/test_hostile_documents.py tests/test_hostile_protocol.py
    tests/test_hostile_e2e.py tests/test_managed_document.py tests/test_status_details.py
    tests/test_signing.py tests/release/test_document_answers.py
    tests/test_agent_tls.py tests/test_local_jobs_broker.py
)
# run-tests.sh's TEST_DEBIAN_PACKAGES, and git.
PACKAGES=mosquitto,python3-apt,python3-venv,python3-cryptography,dpkg-dev,openssl,ca-certificates,systemd,libfaketime,git
ROOTS=${RELEASE_ROOTS_DIR:-/var/cache/iot-jobs-agent-tests/release-roots}
RELEASES=("$@")
[ "${#RELEASES[@]}" -gt 0 ] || RELEASES=(bullseye bookworm trixie)
IN_ROOT=/srv/iot-jobs-agent

skip() {
    echo "release tier SKIPPED: $1"
    exit 0
}
[ "$(id -u)" -eq 0 ] || skip "it needs root (debootstrap, systemd-nspawn); run ./run-tests.sh as root"
command -v systemd-nspawn >/dev/null || skip "systemd-nspawn is missing: apt-get install systemd-container"
command -v debootstrap >/dev/null || skip "debootstrap is missing: apt-get install debootstrap"
[ ! -e /run/host/container-manager ] || skip "this is a systemd-nspawn container already"

# The files of this checkout as git sees them (tracked and new, not ignored), else all.
checkout_files() {
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -z --cached --others --exclude-standard
    else
        find . \( -name .venv -o -name .local -o -name .git -o -name __pycache__ \) -prune \
            -o -type f -print0
    fi
}

# Copy the checkout into ROOT's $IN_ROOT, keeping only the virtual environment of the last run.
copy_checkout() {
    local root=$1 dest=$1$IN_ROOT
    mkdir -p "$dest"
    find "$dest" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
    checkout_files | tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -C "$dest" -xf -
}

# The persistent root of RELEASE (its path on stdout), extracted again when the cached
# debootstrap it came from is new (a changed package list or build recipe, or a rebuild).
prepare_root() {
    local release=$1 root=$ROOTS/$1 tarball key
    tarball=$(scripts/debian-root.sh --cache-path --include "$PACKAGES" "$release") || return 1
    mkdir -p "$ROOTS"
    exec 7>"$ROOTS/.$release.lock"
    flock 7
    key="$tarball $(stat -c %Y "$tarball" 2>/dev/null)"
    if [ ! -f "$root/.release-tier-key" ] || [ "$(cat "$root/.release-tier-key")" != "$key" ]; then
        rm -rf "$root"
        scripts/debian-root.sh --include "$PACKAGES" "$release" "$root" >/dev/null || return 1
        # No package may start a service: the root shares the host's network namespace.
        printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
        chmod 0755 "$root/usr/sbin/policy-rc.d"
        # The host's pip configuration and extra CA certificates (a proxy or a local index).
        local path
        for path in /etc/pip.conf /etc/xdg/pip; do
            if [ -e "$path" ]; then
                mkdir -p "$root$(dirname "$path")"
                cp -a "$path" "$root$path"
            fi
        done
        if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
            cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
            mkdir -p "$root$IN_ROOT"
            in_root "$root" update-ca-certificates >/dev/null || return 1
        fi
        key="$tarball $(stat -c %Y "$tarball")"
        echo "$key" >"$root/.release-tier-key"
    fi
    exec 7>&-
    echo "$root"
}

in_root() {
    local root=$1
    shift
    systemd-nspawn -q -D "$root" --register=no --keep-unit --pipe --chdir="$IN_ROOT" \
        --setenv=CI=true --setenv=LANG=C.UTF-8 -- "$@" </dev/null
}

failed=()
for release in "${RELEASES[@]}"; do
    start=$SECONDS
    echo "=== release tier: $release"
    if ! root=$(prepare_root "$release"); then
        echo "=== release tier: $release: FAILED (no root)"
        failed+=("$release")
        continue
    fi
    copy_checkout "$root"
    in_root "$root" /bin/bash tests/release/in-root.sh "${SUBSET[@]}"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "=== release tier: $release: passed in $((SECONDS - start)) s"
    else
        echo "=== release tier: $release: FAILED (exit $rc) in $((SECONDS - start)) s"
        failed+=("$release")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "release tier FAILED on: ${failed[*]}"
    exit 1
fi
echo "release tier passed on: ${RELEASES[*]}"
