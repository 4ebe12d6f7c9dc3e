#!/usr/bin/env bash
# Build (once) and print the path of a cached debootstrap root of a Debian release, with every
# Debian package the test command needs already installed, ready for
# `systemd-nspawn -D ROOT --register=no --keep-unit --pipe`.
#
#   tests/release/debian-root.sh bullseye      # prints /var/cache/iot-jobs-agent-tests/roots/bullseye
#
# The cache folder is $RELEASE_ROOTS_DIR (default /var/cache/iot-jobs-agent-tests/roots; outside
# the checkout, so CI's fresh clones reuse it). A root is rebuilt when the package list below
# changes (its key is stored in ROOT/.root-key). Two runs at once wait for each other (flock).
# Needs root, debootstrap and network access to the Debian mirror of the host's apt sources.
# Exit status: 0 and the path on stdout; 1 when the build failed; 2 when the machine cannot build.
set -euo pipefail

suite=${1:?usage: debian-root.sh SUITE}
roots=${RELEASE_ROOTS_DIR:-/var/cache/iot-jobs-agent-tests/roots}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

# debootstrap installs what makes a root usable (it does not resolve virtual packages, so
# python3-cryptography cannot be among them); apt-get then adds the test command's Debian
# packages (run-tests.sh's TEST_DEBIAN_PACKAGES) and git.
base=python3,python3-venv,ca-certificates
packages="mosquitto python3-apt python3-venv python3-cryptography dpkg-dev openssl ca-certificates systemd libfaketime git"
key="$suite $base $packages"

if [ "$(id -u)" -ne 0 ]; then
    echo "debian-root.sh: building a Debian root needs root" >&2
    exit 2
fi
command -v debootstrap >/dev/null || { echo "debian-root.sh: debootstrap is not installed" >&2; exit 2; }

root=$roots/$suite
mkdir -p "$roots"
exec 8>"$roots/.$suite.lock"
flock 8
if [ -f "$root/.root-key" ] && [ "$(cat "$root/.root-key")" = "$key" ]; then
    echo "$root"
    exit 0
fi

build=$roots/$suite.build
rm -rf "$build"
echo "debian-root.sh: building $suite in $build (debootstrap from $mirror)" >&2
if ! debootstrap --variant=minbase --include="$base" "$suite" "$build" "$mirror" >"$roots/$suite.log" 2>&1; then
    echo "debian-root.sh: debootstrap $suite failed; last lines of $roots/$suite.log:" >&2
    tail -n 20 "$roots/$suite.log" >&2
    exit 1
fi
cat >"$build/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
SOURCES
# minbase writes no /etc/hosts: "localhost" (the local service's MQTT host) would go to DNS.
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost\n' >"$build/etc/hosts"
# The root shares the host's network namespace: no package may start a system service there
# (mosquitto would take port 1883 on the host).
printf '#!/bin/sh\nexit 101\n' >"$build/usr/sbin/policy-rc.d"
chmod 755 "$build/usr/sbin/policy-rc.d"
# The host's pip configuration and extra CA certificates (a proxy or a local index).
for path in /etc/pip.conf /etc/xdg/pip; do
    if [ -e "$path" ]; then
        mkdir -p "$build$(dirname "$path")"
        cp -a "$path" "$build$path"
    fi
done
if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
    cp -a /usr/local/share/ca-certificates/. "$build/usr/local/share/ca-certificates/"
fi
systemd-nspawn -q -D "$build" --register=no --keep-unit --pipe -- \
    /bin/sh -c 'update-ca-certificates && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get -y -q dist-upgrade && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" && apt-get clean' \
    sh $packages </dev/null >>"$roots/$suite.log" 2>&1 || {
    echo "debian-root.sh: updating $suite failed; see $roots/$suite.log" >&2
    exit 1
}
echo "$key" >"$build/.root-key"
rm -rf "$root"
mv "$build" "$root"
echo "$root"
