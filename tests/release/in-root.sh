#!/usr/bin/env bash
# Run by tests/release/run.sh inside a Debian root (systemd-nspawn, from the checkout's copy):
# the virtual environment, then the pytest files given as arguments, then the demo.
# Exit status: 0 all passed, 1 tests or demo failed, 2 the environment could not be made.
set -uo pipefail
. scripts/setup.sh

echo "--- $(. /etc/os-release && echo "$PRETTY_NAME"), $(python3 --version), python3-apt $(dpkg-query -W -f='${Version}' python3-apt), $(openssl version | cut -d' ' -f1-2)"
ensure_venv "$PWD/.venv" requirements.txt requirements-local.txt requirements-test.txt || exit 2
rc=0
step_start=$SECONDS
# One worker per core, as run-tests.sh does; no cache folder written into the copy.
.venv/bin/python -m pytest -n auto -q -p no:cacheprovider "$@" || rc=1
echo "--- pytest subset: $((SECONDS - step_start)) s"
step_start=$SECONDS
if ./start.sh --local --demo >demo.log 2>&1; then
    echo "--- demo: SUCCEEDED in $((SECONDS - step_start)) s"
else
    echo "--- demo: FAILED; its last lines:"
    tail -n 30 demo.log
    rc=1
fi
exit "$rc"
