#!/usr/bin/env bash
# A fresh Debian root folder for tests (system tier, release tier), from a cached debootstrap.
#
#   scripts/debian-root.sh [options] CODENAME DEST
#       --include PKG[,PKG...]   extra packages in the root (repeatable); part of the cache key
#       --hostname NAME          /etc/hostname and the 127.0.1.1 line of /etc/hosts (default:
#                                iot-test)
#       --rebuild                build the cached root again even when it exists
#   scripts/debian-root.sh --cache-path [--include ...] CODENAME
#       print the cached tarball's path (whether or not it exists) and exit
#
# The first run for a CODENAME and package set builds the root with
# `debootstrap --variant=minbase` and keeps it as a tarball in the cache folder; every run then
# extracts a fresh copy of that tarball into DEST (DEST must be missing or empty), so a test
# never sees what an earlier test did. DEST gets /etc/hosts (localhost on 127.0.0.1 and ::1:
# minbase writes none, and localhost would go to DNS), /etc/hostname and apt sources for
# CODENAME, CODENAME-updates and CODENAME-security.
#
# Cache folder: $IOT_JOBS_AGENT_ROOT_CACHE, else /var/cache/iot-jobs-agent-tests when it can be
# written (root: it survives a fresh clone), else .cache/debian-roots in the checkout
# (git-ignored). Mirror: $DEBIAN_MIRROR, else the first Debian URI in the host's apt sources,
# else http://deb.debian.org/debian ($DEBIAN_SECURITY_MIRROR likewise for -security).
# Building needs root and debootstrap (installed with apt-get when missing); extracting needs
# root too (device files, ownership). Two runs at once build a root only once (flock).
# Exit status: 0 done, 1 build or extraction failed, 2 bad usage or machine not ready.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/setup.sh
. "$here/scripts/setup.sh"

# Bumped when the way a root is built changes, so old cached tarballs are not reused.
BUILD_RECIPE=2

usage() {
    sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

die() {
    echo "debian-root.sh: $1" >&2
    exit "${2:-1}"
}

includes=()
hostname=iot-test
rebuild=0
print_cache=0
positional=()
while [ $# -gt 0 ]; do
    case $1 in
        --include)
            [ $# -ge 2 ] || die "--include needs a package list" 2
            IFS=, read -r -a more <<<"$2"
            includes+=("${more[@]}")
            shift
            ;;
        --hostname)
            [ $# -ge 2 ] || die "--hostname needs a name" 2
            hostname=$2
            shift
            ;;
        --rebuild) rebuild=1 ;;
        --cache-path) print_cache=1 ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option: $1" 2 ;;
        *) positional+=("$1") ;;
    esac
    shift
done

codename=${positional[0]:-}
dest=${positional[1]:-}
[ -n "$codename" ] || { usage >&2; die "give a release codename (bookworm, trixie, bullseye...)" 2; }
[[ $codename =~ ^[a-z]+$ ]] || die "not a release codename: $codename" 2
[[ $hostname =~ ^[A-Za-z0-9-]+$ ]] || die "not a host name: $hostname" 2
if [ "$print_cache" = 0 ] && [ -z "$dest" ]; then
    usage >&2
    die "give the folder to extract the root into" 2
fi

# Debian URI from the host's apt sources (one-line or deb822 format), matching $1 (a regex for
# the path: /debian or /debian-security).
host_mirror() {
    local pattern=$1
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
        2>/dev/null | grep -v '^[[:space:]]*#' | grep -oE '(https?|file)://[^[:space:]]+' \
        | grep -E "${pattern}/?\$" | head -n 1 || true
}

mirror=${DEBIAN_MIRROR:-$(host_mirror '/debian')}
mirror=${mirror:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-$(host_mirror '/debian-security')}
security_mirror=${security_mirror:-http://deb.debian.org/debian-security}

cache_dir() {
    if [ -n "${IOT_JOBS_AGENT_ROOT_CACHE:-}" ]; then
        echo "$IOT_JOBS_AGENT_ROOT_CACHE"
    elif mkdir -p /var/cache/iot-jobs-agent-tests 2>/dev/null && [ -w /var/cache/iot-jobs-agent-tests ]; then
        echo /var/cache/iot-jobs-agent-tests
    else
        echo "$here/.cache/debian-roots"
    fi
}

arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
mapfile -t sorted_includes < <(printf '%s\n' "${includes[@]}" | sed '/^$/d' | sort -u)
include_list=$(IFS=,; echo "${sorted_includes[*]}")
key=$(printf '%s\n' "$BUILD_RECIPE" "$codename" "$arch" "$mirror" "$include_list" \
    | sha256sum | cut -c1-12)
cache=$(cache_dir)
tarball="$cache/debian-$codename-$arch-$key.tar.zst"

if [ "$print_cache" = 1 ]; then
    echo "$tarball"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, and extracting device files and owners)" 2

write_sources() {
    local root=$1
    cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $codename main
deb $mirror $codename-updates main
deb $security_mirror $codename-security main
EOF
}

write_hosts() {
    local root=$1
    echo "$hostname" >"$root/etc/hostname"
    printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n127.0.1.1 %s\n' \
        "$hostname" >"$root/etc/hosts"
}

# Run a command inside ROOT (chroot, with /proc, /sys and /dev mounted for maintainer scripts).
in_root() {
    local root=$1 rc=0
    shift
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount --rbind /dev "$root/dev"
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@" || rc=$?
    umount -R "$root/dev" || umount -lR "$root/dev"
    umount -R "$root/sys" || umount -lR "$root/sys"
    umount "$root/proc" || umount -l "$root/proc"
    return "$rc"
}

build_failed() {
    local work=$1 log=$2 what=$3
    tail -n 30 "$log" >&2
    cp "$log" "$cache/build-$codename-failed.log" 2>/dev/null || true
    rm -rf "$work"
    die "$what (log: $cache/build-$codename-failed.log)"
}

build_root() {
    local work root started log
    ensure_debian_packages debootstrap zstd || exit 2
    mkdir -p "$cache"
    work=$(mktemp -d "$cache/build-$codename.XXXXXX")
    root="$work/root"
    log="$work/build.log"
    started=$(date +%s)
    echo "Building the $codename root ($arch, minbase${include_list:+ + $include_list}) from $mirror" >&2
    # The extra packages are installed by apt afterwards, not by debootstrap --include:
    # debootstrap configures included Python packages before python3 itself (seen with
    # python3-cryptography on bookworm) and gives up after five tries.
    if ! debootstrap --variant=minbase "$codename" "$root" "$mirror" >"$log" 2>&1; then
        cat "$root/debootstrap/debootstrap.log" >>"$log" 2>/dev/null || true
        build_failed "$work" "$log" "debootstrap of $codename failed"
    fi
    write_sources "$root"
    write_hosts "$root"
    if [ "${#sorted_includes[@]}" -gt 0 ]; then
        # No service starts while building (the root is not booted; a started daemon would
        # run on the host).
        printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
        chmod 0755 "$root/usr/sbin/policy-rc.d"
        if ! in_root "$root" apt-get update -q >>"$log" 2>&1 \
            || ! in_root "$root" apt-get install -y -q --no-install-recommends \
                "${sorted_includes[@]}" >>"$log" 2>&1; then
            build_failed "$work" "$log" "installing $include_list into the $codename root failed"
        fi
        rm -f "$root/usr/sbin/policy-rc.d"
    fi
    # Lists and downloaded .debs only make the tarball bigger; apt-get update refreshes them.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
    tar --numeric-owner --xattrs -C "$root" -cf - . | zstd -q -T0 -3 -o "$work/root.tar.zst"
    printf 'codename=%s\narch=%s\nmirror=%s\ninclude=%s\nbuilt=%s\n' "$codename" "$arch" \
        "$mirror" "$include_list" "$(date -u +%FT%TZ)" >"${tarball%.tar.zst}.txt"
    mv "$work/root.tar.zst" "$tarball"
    rm -rf "$work"
    echo "Cached $tarball ($(du -h "$tarball" | cut -f1), $(($(date +%s) - started)) s)" >&2
}

mkdir -p "$cache"
exec 8>"$cache/.lock-$codename-$key"
flock 8
if [ "$rebuild" = 1 ] || [ ! -s "$tarball" ]; then
    build_root
fi
flock -u 8

if [ -e "$dest" ] && [ -n "$(ls -A "$dest" 2>/dev/null)" ]; then
    die "$dest is not empty: give a new or empty folder" 2
fi
mkdir -p "$dest"
zstd -q -d -c "$tarball" | tar --numeric-owner --xattrs -xpf - -C "$dest" \
    || die "could not extract $tarball into $dest"
write_hosts "$dest"
echo "$dest"
