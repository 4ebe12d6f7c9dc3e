# shellcheck shell=bash
# What a machine needs before the agent or its tests run: Debian packages and the virtual
# environment. Sourced by start.sh, run-tests.sh and systemd/install.sh, so all three make the
# environment the same way. Defines functions only; running it does nothing else.
#
# The virtual environment is made from the distribution's Python (/usr/bin/python3) with
# --system-site-packages, because python3-apt must come from the distribution: it has to match
# the installed apt library, and the PyPI project of that name is an unusable stub.

SYSTEM_PYTHON=${SYSTEM_PYTHON:-/usr/bin/python3}
_apt_lists_updated=0

# Print the names of the given Debian packages that are not installed, one line, space separated.
missing_debian_packages() {
    local package missing=()
    for package in "$@"; do
        if [ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]; then
            missing+=("$package")
        fi
    done
    echo "${missing[*]}"
}

# Install the given Debian packages that are missing. As root: apt-get update (once per run),
# then apt-get install. Otherwise print the exact command and return 2.
ensure_debian_packages() {
    local missing
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "dpkg-query not found: this is not a Debian-based system; install by hand: $*" >&2
        return 2
    fi
    missing=$(missing_debian_packages "$@")
    [ -n "$missing" ] || return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "These Debian packages are missing: $missing" >&2
        echo "Install them as root, then run this again:" >&2
        echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends $missing" >&2
        return 2
    fi
    echo "Installing Debian packages: $missing"
    export DEBIAN_FRONTEND=noninteractive
    if [ "$_apt_lists_updated" = 0 ]; then
        # One unreachable or unsigned third-party source makes the whole update fail; the
        # install below still works when the distribution's own lists were read.
        apt-get update -q || echo "apt-get update reported errors; trying the install anyway" >&2
        _apt_lists_updated=1
    fi
    # shellcheck disable=SC2086  # $missing is a list of package names
    apt-get install -y -q --no-install-recommends $missing </dev/null || return 1
}

# True when DIR is a virtual environment of $SYSTEM_PYTHON's version that sees the system's
# site packages (and so python3-apt).
_venv_is_usable() {
    local dir=$1 want have
    [ -x "$dir/bin/python" ] || return 1
    grep -qx 'include-system-site-packages = true' "$dir/pyvenv.cfg" 2>/dev/null || return 1
    want=$("$SYSTEM_PYTHON" -c 'import sys; print(sys.version_info[:2])' 2>/dev/null) || return 1
    have=$("$dir/bin/python" -c 'import sys; print(sys.version_info[:2])' 2>/dev/null) || return 1
    [ "$want" = "$have" ]
}

# ensure_venv DIR REQUIREMENTS_FILE...
# Make DIR a virtual environment (first use, or when it is broken or of another Python), then
# pip install the requirement files whose content changed since the last install into it.
# A stamp file in DIR remembers a hash of each installed file.
ensure_venv() {
    local dir=$1 rc
    shift
    mkdir -p "$(dirname "$dir")"
    # Two scripts started at once must not both build the same environment.
    exec 9<"$(dirname "$dir")"
    flock 9
    _ensure_venv_locked "$dir" "$dir/.requirements.sha256" "$@"
    rc=$?
    exec 9<&-
    return $rc
}

_pip_install() {
    local dir=$1
    shift
    "$dir/bin/python" -m pip install --disable-pip-version-check --no-input -q "$@"
}

_ensure_venv_locked() {
    local dir=$1 stamp=$2 file line stale=()
    shift 2
    if ! _venv_is_usable "$dir"; then
        if ! "$SYSTEM_PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
            echo "$SYSTEM_PYTHON cannot make virtual environments: install python3-venv:" >&2
            echo "    sudo apt-get install -y python3-venv" >&2
            return 2
        fi
        echo "Creating the virtual environment $dir (from $SYSTEM_PYTHON, with system site packages)"
        "$SYSTEM_PYTHON" -m venv --clear --system-site-packages "$dir" || return 1
        rm -f "$stamp"
    fi
    for file in "$@"; do
        line="$(sha256sum "$file" | cut -d' ' -f1)  $(basename "$file")"
        grep -qxF "$line" "$stamp" 2>/dev/null || stale+=("$file")
    done
    [ "${#stale[@]}" -gt 0 ] || return 0
    echo "Installing Python requirements into $dir: ${stale[*]}"
    # pip checks hashes for all requirements of one run or for none: files with hashes
    # (requirements.txt) get a run of their own, in hash-checking mode.
    local hashed=() plain=()
    for file in "${stale[@]}"; do
        if grep -q -- '--hash=' "$file"; then hashed+=(-r "$file"); else plain+=(-r "$file"); fi
    done
    if [ "${#hashed[@]}" -gt 0 ]; then
        _pip_install "$dir" "${hashed[@]}" || return 1
    fi
    if [ "${#plain[@]}" -gt 0 ]; then
        _pip_install "$dir" "${plain[@]}" || return 1
    fi
    for file in "${stale[@]}"; do
        line="$(sha256sum "$file" | cut -d' ' -f1)  $(basename "$file")"
        { awk -v name="$(basename "$file")" '$2 != name' "$stamp" 2>/dev/null; echo "$line"; } \
            >"$stamp.new"
        mv "$stamp.new" "$stamp"
    done
}
