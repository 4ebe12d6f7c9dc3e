#!/usr/bin/env bash
# The test command. On a fresh Debian or Ubuntu machine (as root) it installs what the suite
# needs, then runs ruff, the Python 3.9 compatibility check and the whole pytest suite.
#
#   ./run-tests.sh                      # everything
#   ./run-tests.sh -k notify -x         # extra arguments go to pytest
#
# As root, missing Debian packages are installed with apt-get; as another user the script
# prints the apt-get command to run and exits 2. The virtual environment .venv is made from
# /usr/bin/python3 with --system-site-packages (python3-apt comes from the distribution) and
# the pinned requirements are installed into it when they change.
# Exit status: 0 when every step passed, 1 when one failed, 2 when the machine is not ready.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here" || exit 2
# shellcheck source=scripts/setup.sh
. scripts/setup.sh

# mosquitto: the local broker; python3-apt: the APT handler; python3-venv: the environment;
# python3-cryptography: the local service's certificates; dpkg-dev: building the test .debs
# and repositories; openssl, ca-certificates: TLS; systemd: systemctl and systemd-analyze
# (only their files: nothing is started; containers lack them); libfaketime: the wall clock
# jump test (its preload library, in the multiarch folder); dbus, python3-dbus, python3-gi: the
# APT worker's logind shutdown lock, tested against a stand-in logind on a private bus.
TEST_DEBIAN_PACKAGES=(mosquitto python3-apt python3-venv python3-cryptography dpkg-dev
    openssl ca-certificates systemd libfaketime dbus python3-dbus python3-gi)

ensure_debian_packages "${TEST_DEBIAN_PACKAGES[@]}" || exit 2
ensure_venv "$here/.venv" requirements.txt requirements-local.txt requirements-test.txt || exit 2

python_files() {
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files --cached --others --exclude-standard -- '*.py'
    else
        find . \( -name .venv -o -name .local -o -name .git -o -name __pycache__ \) -prune \
            -o -name '*.py' -type f -print
    fi
}

failed=()
step() {
    local name=$1
    shift
    echo "=== $name"
    if "$@"; then
        echo "=== $name: passed"
    else
        echo "=== $name: FAILED"
        failed+=("$name")
    fi
}

mapfile -t files < <(python_files | sort)
step ruff .venv/bin/ruff check .
step "python 3.9 (vermin)" .venv/bin/vermin --target=3.9- --violations --no-tips -q "${files[@]}"
step "python 3.9 (grammar)" .venv/bin/python scripts/check_py39.py "${files[@]}"

run_pytest() {
    local rc
    # The suite is parallel-safe (every test gets its own ports and folders): one worker per core.
    .venv/bin/python -m pytest -n auto "$@"
    rc=$?
    if [ "$rc" -eq 5 ]; then
        echo "pytest collected no tests: that is a failure here, not a pass" >&2
    fi
    return "$rc"
}
# The system tier (tests/system) boots Debian guests with systemd: root with CAP_SYS_ADMIN,
# systemd-nspawn and debootstrap; one guest at a time, so without xdist. It runs after the
# suite when the command has no arguments, and says why when it cannot.
SYSTEM_TIER_PACKAGES=(systemd-container debootstrap zstd dpkg-dev debhelper dh-python python3-pip
    lintian)
system_tier() {
    local reason
    if [ "$(id -u)" -eq 0 ]; then
        ensure_debian_packages "${SYSTEM_TIER_PACKAGES[@]}" || return 1
    fi
    reason=$(.venv/bin/python -c 'import sys; sys.path.insert(0, "tests/system")
from guest import system_tier_unavailable
print(system_tier_unavailable() or "")') || return 1
    if [ -n "$reason" ]; then
        echo "system tier SKIPPED: $reason"
        return 0
    fi
    # Guest roots not cached yet (first run on a machine): both releases at once.
    local packages release pids=()
    packages=$(.venv/bin/python -c 'import sys; sys.path.insert(0, "tests/system")
from guest import ROOT_PACKAGES
print(ROOT_PACKAGES)') || return 1
    for release in bookworm trixie; do
        scripts/debian-root.sh --cache-only --include "$packages" "$release" >/dev/null &
        pids+=($!)
    done
    for release in "${pids[@]}"; do wait "$release" || return 1; done
    .venv/bin/python -m pytest -p no:xdist tests/system
}

if [ "$#" -eq 0 ]; then
    step pytest run_pytest --ignore=tests/system
    step "system tier" system_tier
else
    step pytest run_pytest "$@"
fi

# The release tier (tests/release/run.sh): the suite's subset and the demo in Debian 11, 12 and
# 13 roots under systemd-nspawn (docs/releases.md). It runs when RELEASE_TIER=1, as .ci/run sets
# it: about 4 minutes with its roots cached, over 20 on a machine that has to build them, which
# would take this command past its 15-minute budget. Without root, systemd-nspawn or
# debootstrap it says why and skips.
if [ "${RELEASE_TIER:-0}" = 1 ]; then
    step "release tier (Debian 11, 12, 13)" tests/release/run.sh
else
    echo "=== release tier: not run (RELEASE_TIER=1 runs it; .ci/run does)"
fi

if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED steps: ${failed[*]}"
    exit 1
fi
echo "All steps passed: ruff, Python 3.9 checks, pytest, system tier and release tier (or their skips, said above)."
