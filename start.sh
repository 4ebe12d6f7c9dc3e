#!/usr/bin/env bash
# Run the agent from this folder.
#
#   ./start.sh [AGENT ARGUMENTS...]     the agent with ./settings.conf (or -c/--config FILE)
#   ./start.sh --local                  the agent against a local Jobs service and broker, with
#                                       demo certificates, settings and a throwaway apt root,
#                                       all under .local/ (no AWS account needed)
#   ./start.sh --local --demo           one sample APT_UPDATE job end to end; exit status 0
#                                       when it SUCCEEDED
#
# First use makes the virtual environment .venv from /usr/bin/python3 with
# --system-site-packages (python3-apt comes from the distribution, never from PyPI) and
# installs the pinned requirements into it; later runs only reinstall when they change.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here" || exit 2

usage() {
    cat <<'EOF'
Usage: ./start.sh [MODE] [OPTIONS...]

Modes:
  ./start.sh                          run the agent with ./settings.conf (Ctrl-C stops it)
  ./start.sh -c FILE | --config FILE  run the agent with another settings file
  ./start.sh --check-config [-c FILE] check the settings and certificates, say what is
                                      wrong, and exit (0 when valid, 2 when not)
  ./start.sh --log-level LEVEL        run with CRITICAL, ERROR, WARNING, INFO or DEBUG logging
  ./start.sh status [--json]          what the agent is doing (running or not, connected since
                                      when, the current job and its phase, the last jobs)
  ./start.sh --local                  the agent against a local AWS IoT Jobs service and
                                      broker, with demo certificates, settings and a
                                      throwaway apt root under .local/ (no AWS account)
  ./start.sh --local --demo           one sample APT_UPDATE job end to end, then exit
                                      (0 when it SUCCEEDED)
  ./start.sh --local --help           the options of the local modes (--dir, --thing, ...)
  ./start.sh --help                   this text

Every option other than --local and --help is passed to jobs_agent.py.
Exit status 2: the settings or the set-up are wrong (the message says what to change).
README.md is the guide; docs/operating.md has every setting.
EOF
}

case "${1:-}" in
    -h | --help)
        usage
        exit 0
        ;;
esac
# shellcheck source=scripts/setup.sh
. scripts/setup.sh

# What the local demo needs from the distribution: the broker, python-apt, venv, the
# certificate library of the local service, and dpkg-dev to build the demo repository.
LOCAL_DEBIAN_PACKAGES=(mosquitto python3-apt python3-venv python3-cryptography dpkg-dev
    ca-certificates)

check_python_apt() {
    if ! "$here/.venv/bin/python" -c 'import apt, apt_pkg' 2>/dev/null; then
        echo "python3-apt is not importable. It comes from the distribution, not from PyPI:" >&2
        echo "    sudo apt-get install -y python3-apt" >&2
        echo "(if it is installed, remove .venv and run this again: it is recreated" >&2
        echo " from $SYSTEM_PYTHON with --system-site-packages)" >&2
        exit 2
    fi
}

if [ "${1:-}" = "--local" ]; then
    shift
    ensure_debian_packages "${LOCAL_DEBIAN_PACKAGES[@]}" || exit 2
    ensure_venv "$here/.venv" requirements.txt requirements-local.txt || exit 2
    check_python_apt
    exec "$here/.venv/bin/python" -m local_jobs.demo --dir "$here/.local" "$@"
fi

ensure_venv "$here/.venv" requirements.txt || exit 2
check_python_apt

has_config_argument=0
for argument in "$@"; do
    case $argument in
        -c* | --config | --config=* | -h | --help) has_config_argument=1 ;;
    esac
done
if [ "$has_config_argument" = 0 ]; then
    if [ ! -f settings.conf ]; then
        cat >&2 <<EOF
No settings file: $here/settings.conf does not exist.
Make one from the example and fill in [connection] (endpoint, thing name, certificates):
    cp settings.conf.example settings.conf && \${EDITOR:-nano} settings.conf
(README.md, "Connecting a device to AWS IoT", shows how to get each value), or give
another file with
    ./start.sh --config /path/to/settings.conf
To see the agent work without an AWS account, run the local demo instead:
    ./start.sh --local
EOF
        exit 2
    fi
    set -- --config "$here/settings.conf" "$@"
fi
exec "$here/.venv/bin/python" "$here/jobs_agent.py" "$@"
