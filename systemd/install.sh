#!/usr/bin/env bash
# Install or update the agent as the systemd service iot-jobs-agent, or remove it.
#
#   sudo systemd/install.sh                  install or update (safe to run again)
#   sudo systemd/install.sh --uninstall      remove code and unit; keep settings and state
#   sudo systemd/install.sh --uninstall --purge   also remove settings, certificates and state
#   systemd/install.sh --root DIR            install below DIR (packaging, tests): no systemctl
#
# Places: code and its virtual environment in /opt/iot-jobs-agent, settings and the device
# certificate in /etc/iot-jobs-agent (an existing settings.conf is never overwritten), the job
# journal in /var/lib/iot-jobs-agent, the unit in /etc/systemd/system.
set -euo pipefail

source_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/setup.sh
. "$source_dir/scripts/setup.sh"

unit_name=iot-jobs-agent.service
root=""
action=install
purge=0

usage() {
    sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

while [ $# -gt 0 ]; do
    case $1 in
        --uninstall) action=uninstall ;;
        --purge) purge=1 ;;
        --root)
            [ $# -ge 2 ] || { echo "--root needs a folder" >&2; exit 2; }
            root=$(mkdir -p "$2" && cd "$2" && pwd)
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [ "$purge" = 1 ] && [ "$action" != uninstall ]; then
    echo "--purge goes with --uninstall" >&2
    exit 2
fi
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    echo "Run as root (sudo $0 $*), or give --root DIR to install below a folder." >&2
    exit 2
fi

prefix="$root/opt/iot-jobs-agent"
config_dir="$root/etc/iot-jobs-agent"
state_dir="$root/var/lib/iot-jobs-agent"
unit_path="$root/etc/systemd/system/$unit_name"

# systemctl only for the real system, and only where systemd is running.
use_systemctl=0
if [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    use_systemctl=1
fi

install_code() {
    local files=(agent requirements.txt settings.conf.example)
    local optional
    for optional in README.md examples systemd; do
        [ -e "$source_dir/$optional" ] && files+=("$optional")
    done
    # The agent's top-level modules (jobs_agent.py, job_client.py...); not the local Jobs
    # service, the tests or the benchmarks.
    while IFS= read -r optional; do files+=("$optional"); done \
        < <(cd "$source_dir" && find . -maxdepth 1 -name '*.py' -type f -printf '%f\n' | sort)
    mkdir -p "$prefix"
    # Replace the previous code, keep the virtual environment.
    find "$prefix" -mindepth 1 -maxdepth 1 ! -name venv -exec rm -rf {} +
    tar -C "$source_dir" --exclude=__pycache__ --exclude='*.pyc' -cf - "${files[@]}" \
        | tar -C "$prefix" --no-same-owner -xf -
    chmod -R u=rwX,go=rX "$prefix"
    echo "Agent code installed in $prefix"
}

install_settings() {
    mkdir -p "$config_dir/certs"
    chmod 0750 "$config_dir"
    chmod 0700 "$config_dir/certs"
    if [ -e "$config_dir/settings.conf" ]; then
        echo "Settings kept: $config_dir/settings.conf"
        return
    fi
    sed -e 's#^state_dir *=.*#state_dir = /var/lib/iot-jobs-agent#' \
        "$source_dir/settings.conf.example" >"$config_dir/settings.conf.new"
    chmod 0600 "$config_dir/settings.conf.new"
    mv "$config_dir/settings.conf.new" "$config_dir/settings.conf"
    echo "Settings template written: $config_dir/settings.conf (edit it before starting)"
}

install_unit() {
    local changed=0
    mkdir -p "$(dirname "$unit_path")"
    if ! cmp -s "$source_dir/systemd/$unit_name" "$unit_path"; then
        install -m 0644 "$source_dir/systemd/$unit_name" "$unit_path"
        changed=1
        echo "Unit installed: $unit_path"
    else
        echo "Unit unchanged: $unit_path"
    fi
    [ "$use_systemctl" = 1 ] || return 0
    [ "$changed" = 0 ] || systemctl daemon-reload
    systemctl enable "$unit_name" >/dev/null
    if systemctl is-active --quiet "$unit_name"; then
        # Safe during a job: KillMode=process leaves a running dpkg alone, and the new agent
        # reports the job from its journal.
        systemctl restart "$unit_name"
        echo "Service restarted with the new code."
    fi
}

do_install() {
    ensure_debian_packages python3 python3-apt python3-venv || exit 2
    install_code
    ensure_venv "$prefix/venv" "$prefix/requirements.txt" || exit 1
    # Bytecode made once here: the unit sets PYTHONDONTWRITEBYTECODE, so without it every
    # start, and every APT job's worker process, would compile the agent's modules again.
    "$prefix/venv/bin/python" -m compileall -q "$prefix/agent" "$prefix"/*.py >/dev/null || exit 1
    mkdir -p "$state_dir"
    chmod 0700 "$state_dir"
    install_settings
    install_unit
    if [ "$use_systemctl" = 1 ] && ! systemctl is-active --quiet "$unit_name"; then
        cat <<EOF

Next: put the device certificate, its private key (chmod 600) and the Amazon root CA in
$config_dir/certs, fill in [connection] in $config_dir/settings.conf, then:
    systemctl start iot-jobs-agent && journalctl -u iot-jobs-agent -f
EOF
    fi
}

do_uninstall() {
    if [ "$use_systemctl" = 1 ]; then
        systemctl disable --now "$unit_name" 2>/dev/null || true
    fi
    rm -f "$unit_path"
    [ "$use_systemctl" = 0 ] || systemctl daemon-reload
    rm -rf "$prefix"
    echo "Removed $prefix and $unit_path"
    if [ "$purge" = 1 ]; then
        rm -rf "$config_dir" "$state_dir"
        echo "Removed $config_dir and $state_dir"
    else
        echo "Kept settings ($config_dir) and state ($state_dir); --purge removes them."
    fi
}

"do_$action"
