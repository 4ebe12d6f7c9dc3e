"""The APT worker's folders: a killed worker's folder is removed by the next worker, the folder
of a worker that still runs (an orphan of the previous agent) never is."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from apt_helpers import JobThread, new_job, run_job

from agent.apt.workdir import LOCK_NAME, PREFIX, UNLOCKED_GRACE_SECONDS, remove_stale, work_dir
from agent.errors import JobFailed

pytest_plugins = ("apt_fixtures",)
pytestmark = pytest.mark.timeout(60)

# Holds an flock on a file (the way a running worker holds its folder's) until killed.
HOLD_FLOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


def worker_folder(parent, name: str, locked_file: bool = True):
    folder = parent / f"{PREFIX}{name}"
    folder.mkdir()
    (folder / "dpkg.log").write_text("left behind\n")
    if locked_file:
        (folder / LOCK_NAME).touch()
    return folder


def test_folder_of_a_killed_worker_is_removed(tmp_path):
    folder = worker_folder(tmp_path, "killed")

    assert remove_stale(str(tmp_path)) == [folder]
    assert not folder.exists()


def test_folder_of_a_worker_that_still_runs_is_kept(tmp_path):
    folder = worker_folder(tmp_path, "running")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FLOCK, str(folder / LOCK_NAME)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"

        assert remove_stale(str(tmp_path)) == []
        assert (folder / "dpkg.log").exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_folder_without_a_lock_file_is_removed_only_once_old(tmp_path):
    young = worker_folder(tmp_path, "young", locked_file=False)
    old = worker_folder(tmp_path, "old", locked_file=False)
    then = time.time() - UNLOCKED_GRACE_SECONDS - 60
    os.utime(old, (then, then))

    assert remove_stale(str(tmp_path)) == [old]
    assert young.exists()


def test_other_folders_and_symlinks_are_left_alone(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (tmp_path / f"{PREFIX}link").symlink_to(other)
    (other / LOCK_NAME).touch()

    assert remove_stale(str(tmp_path)) == []
    assert other.exists()


def test_a_work_folder_is_locked_while_used_and_gone_after(tmp_path):
    with work_dir(str(tmp_path)) as folder:
        assert folder.name.startswith(PREFIX)
        assert remove_stale(str(tmp_path)) == []
    assert not folder.exists()


def test_the_next_job_removes_the_folder_of_a_killed_worker(
    apt_root, tmp_path, monkeypatch, caplog
):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))
    with caplog.at_level(logging.INFO, logger="job_client.handler"):
        running = JobThread(apt_root, {"aptPackageName": "slow"}, new_job())
        deadline = time.monotonic() + 30
        while not (apt_root.path / "slow-once").exists():  # dpkg runs the 60 s postinst
            assert time.monotonic() < deadline, "dpkg did not run the postinst"
            time.sleep(0.05)
        [pid] = [int(m) for m in re.findall(r"apt worker started \(pid (\d+)\)", caplog.text)]
    os.killpg(pid, signal.SIGKILL)  # a power cut: the worker and its dpkg
    with pytest.raises(JobFailed):
        running.result()
    assert list(temporary.glob(PREFIX + "*")), "the killed worker left no folder"

    run_job(apt_root, {"aptPackageName": "alpha"})

    assert not list(temporary.glob(PREFIX + "*"))
