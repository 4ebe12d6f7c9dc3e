"""Running a step's program: no shell, concurrent draining, tails, time limit, other user."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from agent.process import current_user, lookup_user, run_process

PY = sys.executable
# The checkout may sit below a folder only root can enter (/root), and with it the venv's
# interpreter: a program run as another user is the system's interpreter, which every account can
# reach, importing only the standard library.
SYSTEM_PY = "/usr/bin/python3"


def test_large_output_on_both_streams_is_drained_and_only_the_tails_kept():
    # 2 MB on each stream, interleaved: a reader of one pipe only would block the child.
    script = (
        "import sys\n"
        "for i in range(2000):\n"
        "    sys.stdout.write('o' * 1023 + '\\n'); sys.stderr.write('e' * 1023 + '\\n')\n"
        "sys.stdout.write('END-OUT'); sys.stderr.write('END-ERR\\n')\n"
    )
    result = run_process([PY, "-c", script], timeout=60, tail_bytes=1000)
    assert result.ok
    assert result.stdout.endswith("END-OUT") and len(result.stdout) <= 1000
    assert result.stderr.endswith("END-ERR\n")
    assert result.stderr_lines == 2001


def test_arguments_are_not_interpreted_by_a_shell(tmp_path):
    marker = tmp_path / "injected"
    result = run_process(["/bin/echo", f"$(touch {marker}); touch {marker}"], timeout=10)
    assert result.stdout == f"$(touch {marker}); touch {marker}\n"
    assert not marker.exists()


def test_program_past_its_time_limit_is_killed_with_its_children():
    script = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('started', flush=True); time.sleep(60)\n"
    )
    begun = time.monotonic()
    result = run_process([PY, "-c", script], timeout=1.0)
    assert result.timed_out and not result.ok and result.returncode is None
    assert "started" in result.stdout
    assert time.monotonic() - begun < 15


def test_should_stop_ends_the_program():
    begun = time.monotonic()
    result = run_process(
        [PY, "-c", "import time; time.sleep(60)"],
        timeout=60,
        should_stop=lambda: time.monotonic() - begun > 0.3,
    )
    assert result.stopped and not result.ok
    assert "stopped" in result.describe()


def test_missing_program_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        run_process([str(tmp_path / "nothing")], timeout=5)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_other_user_runs_with_that_users_ids_and_a_clean_environment():
    nobody = lookup_user("nobody")
    assert nobody is not None
    script = (
        "import json, os; print(json.dumps([os.getuid(), os.getgid(), os.getgroups(), "
        "sorted(os.environ)]))"
    )
    result = run_process([SYSTEM_PY, "-c", script], timeout=10, user=nobody)
    assert result.ok, result.stderr
    uid, gid, groups, environment = json.loads(result.stdout)
    assert (uid, gid) == (nobody.uid, nobody.gid)
    assert 0 not in groups
    assert environment == ["HOME", "LANG", "LOGNAME", "PATH", "USER"]


def test_agent_user_is_known():
    assert current_user().uid == os.geteuid()
