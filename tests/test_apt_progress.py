"""The dpkg progress reader keeps every line dpkg wrote, also those left when dpkg ends."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("apt")

from agent.apt.progress import InstallReporter  # noqa: E402


def a_child_that_has_ended() -> int:
    """A child process that has exited and is not reaped yet, as dpkg's is when it ends."""
    pid = os.posix_spawn("/bin/false", ["false"], dict(os.environ))
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    return pid


def test_an_error_dpkg_wrote_just_before_it_ended_is_kept(tmp_path):
    events = []
    with open(tmp_path / "dpkg.log", "ab") as log:
        reporter = InstallReporter(lambda details, force: events.append(details), log.fileno())
        for percent in range(0, 100, 5):
            reporter.write_stream.write(f"pmstatus:bad:{percent}:Installing bad\n")
        reporter.write_stream.write(
            "pmerror:bad:95:installed bad package post-installation script subprocess "
            "returned error exit status 1\n"
        )
        reporter.write_stream.flush()
        reporter.child_pid = a_child_that_has_ended()

        reporter.wait_child()

    assert reporter.errors == [
        "bad: installed bad package post-installation script subprocess returned error exit "
        "status 1"
    ]
    assert events[-1]["percent"] == "95"


def test_nothing_left_in_the_pipe_is_nothing_read(tmp_path):
    with open(tmp_path / "dpkg.log", "ab") as log:
        reporter = InstallReporter(lambda details, force: None, log.fileno())
        reporter.child_pid = a_child_that_has_ended()

        reporter.wait_child()

    assert reporter.errors == []
