#!/usr/bin/env bash
# Build the Debian package of the agent.
#
#   packaging/build-deb.sh [--version VERSION] [--out DIR] [--no-lintian]
#
# Writes DIR/iot-jobs-agent_VERSION_all.deb (DIR defaults to dist/ in the checkout; VERSION to
# the one in agent/version.py, which the packaged agent's --version then prints too). The
# package is built with dpkg-buildpackage and debhelper (debian/) from a staged copy of the
# agent's code, with AWSIoTPythonSDK (pinned in requirements.txt; Debian has no package of it)
# bundled beside it: the device needs no PyPI. The SDK's wheel is downloaded once with pip
# into .cache/vendor (git-ignored). lintian runs on the result when it is installed.
# As root, missing build dependencies are installed with apt-get, as run-tests.sh does.
# Exit status: 0 built, 1 the build failed, 2 bad usage or missing build dependencies.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/setup.sh
. "$here/scripts/setup.sh"

BUILD_DEBIAN_PACKAGES=(dpkg-dev debhelper dh-python python3 python3-pip)

usage() {
    sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

die() {
    echo "build-deb.sh: $1" >&2
    exit "${2:-1}"
}

version=""
out="$here/dist"
run_lintian=1
while [ $# -gt 0 ]; do
    case $1 in
        --version)
            [ $# -ge 2 ] || die "--version needs a version" 2
            version=$2
            shift
            ;;
        --out)
            [ $# -ge 2 ] || die "--out needs a folder" 2
            out=$2
            shift
            ;;
        --no-lintian) run_lintian=0 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" 2 ;;
    esac
    shift
done

project_version() {
    sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$here/agent/version.py"
}
[ -n "$version" ] || version=$(project_version)
# A native Debian version that is also a plain Python string literal.
[[ $version =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "not a package version: ${version:-(empty)}" 2

ensure_debian_packages "${BUILD_DEBIAN_PACKAGES[@]}" || exit 2

sdk_pin=$(grep -E '^AWSIoTPythonSDK==' "$here/requirements.txt" | head -n 1 | cut -d' ' -f1)
[ -n "$sdk_pin" ] || die "requirements.txt pins no AWSIoTPythonSDK==VERSION"
sdk_version=${sdk_pin#AWSIoTPythonSDK==}

# The SDK's wheel (pure Python), downloaded once per pinned version.
vendor="$here/.cache/vendor"
wheel=$(ls "$vendor"/awsiotpythonsdk-"$sdk_version"-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
    mkdir -p "$vendor"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$vendor" "$sdk_pin" \
        || die "could not download $sdk_pin (PyPI is needed once, on the build machine)"
    wheel=$(ls "$vendor"/awsiotpythonsdk-"$sdk_version"-*.whl | head -n 1)
fi

stage_parent=$(mktemp -d "${TMPDIR:-/tmp}/iot-jobs-agent-deb.XXXXXX")
trap 'rm -rf "$stage_parent"' EXIT
stage="$stage_parent/iot-jobs-agent-$version"
mkdir -p "$stage/docs"

# The agent's code only: not the local Jobs service, the tests or the benchmarks.
(cd "$here" && tar --exclude=__pycache__ --exclude='*.pyc' -cf - \
    agent jobs_agent.py job_client.py settings.conf.example README.md \
    systemd/iot-jobs-agent.service packaging/iot-jobs-agent packaging/logind-iot-jobs-agent.conf debian) | tar -C "$stage" -xf -
for page in debian-package.md systemd.md; do
    cp "$here/docs/$page" "$stage/docs/$page"
done
rm -f "$stage/debian/changelog"
printf '"""The agent'"'"'s version: the one place it is written (``--version``, the Debian package)."""\n\n__version__ = "%s"\n' \
    "$version" >"$stage/agent/version.py"
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    "$wheel" "$stage/sdk"
mv "$stage/sdk/AWSIoTPythonSDK" "$stage/AWSIoTPythonSDK"
rm -rf "$stage/sdk"

# debian/changelog from the version (one entry: the version lives in agent/version.py only).
cat >"$stage/debian/changelog" <<EOF
iot-jobs-agent ($version) unstable; urgency=medium

  * Version $version of the agent (AWSIoTPythonSDK $sdk_version bundled).

 -- IoT Jobs Agent maintainers <iot-jobs-agent@example.com>  $(date -R)
EOF

echo "Building iot-jobs-agent $version"
if ! (cd "$stage" && dpkg-buildpackage -us -uc -b --no-sign) >"$stage_parent/build.log" 2>&1; then
    tail -n 40 "$stage_parent/build.log" >&2
    die "dpkg-buildpackage failed (last lines above)"
fi
mkdir -p "$out"
deb="$out/iot-jobs-agent_${version}_all.deb"
mv "$stage_parent/iot-jobs-agent_${version}_all.deb" "$deb"

if [ "$run_lintian" = 1 ] && command -v lintian >/dev/null 2>&1; then
    # Tags explained in docs/debian-package.md are suppressed in debian/*.lintian-overrides.
    lintian --info "$deb" || echo "lintian reported the tags above" >&2
fi
echo "$deb"
