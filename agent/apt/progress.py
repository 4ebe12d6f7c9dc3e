"""python-apt progress classes of the APT worker: they turn download and dpkg progress into
throttled JSON events, collect error messages, and keep dpkg off the worker's protocol stream.
"""

from __future__ import annotations

import io
import os
import time
from typing import Callable, Dict, List, Optional

import apt.progress.base
import apt_pkg

Emit = Callable[[Dict[str, str], bool], None]


class AcquireReporter(apt.progress.base.AcquireProgress):
    """Reports bytes fetched during ``phase``; collects failed items; cancels on ``stopping()``."""

    def __init__(self, phase: str, emit: Emit, stopping: Callable[[], bool]) -> None:
        super().__init__()
        self.phase = phase
        self.failures: List[str] = []
        self._emit = emit
        self._stopping = stopping

    def start(self) -> None:
        super().start()
        self._emit({"phase": self.phase}, True)

    def pulse(self, owner: apt_pkg.Acquire) -> bool:
        self._emit(
            {
                "phase": self.phase,
                "downloadedBytes": str(int(self.current_bytes)),
                "totalBytes": str(int(self.total_bytes)),
            },
            False,
        )
        return not self._stopping()

    def fail(self, item: apt_pkg.AcquireItemDesc) -> None:
        error = item.owner.error_text or "failed"
        if item.owner.status == item.owner.STAT_DONE:
            return  # an "ign" (optional index missing) is not a failure
        self.failures.append(f"{item.description}: {error}")

    def stop(self) -> None:
        super().stop()
        self._emit(
            {
                "phase": self.phase,
                "downloadedBytes": str(int(self.fetched_bytes or self.current_bytes)),
                "totalBytes": str(int(self.total_bytes)),
            },
            True,
        )


class InstallReporter(apt.progress.base.InstallProgress):
    """Reports dpkg progress in percent; collects dpkg errors and conffile prompts.

    The child python-apt forks for dpkg gets stdin from /dev/null and writes its output (and
    dpkg's) to ``log_fd``, so nothing can prompt and nothing reaches the protocol stream.
    """

    # python-apt looks for dpkg's exit between waits on the status pipe, which it keeps open
    # itself: every 0.1 s by default, so each job waited up to 0.1 s after dpkg had ended.
    select_timeout = 0.01

    def __init__(self, emit: Emit, log_fd: int, phase: str = "installing") -> None:
        super().__init__()
        self.phase = phase
        self.errors: List[str] = []
        self.conffiles: List[str] = []
        self._emit = emit
        self._log_fd = log_fd
        self._last_percent: Optional[int] = None

    def fork(self) -> int:
        pid = os.fork()
        if pid == 0:
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(self._log_fd, 1)
            os.dup2(self._log_fd, 2)
        return pid

    def wait_child(self) -> int:
        """Wait for dpkg as python-apt does, then read what it left in the status pipe.

        python-apt reads one status line per wait and stops at the child's exit, so lines
        dpkg wrote just before it ended (its error message above all) were lost whenever they
        came faster than one per wait: the job then said only "installArchives() failed".
        """
        status = super().wait_child()
        self.read_remaining_status()
        return status

    def read_remaining_status(self) -> None:
        """Hand every complete line still in the status pipe to python-apt's parser."""
        stream = self.status_stream
        lines = []
        while True:
            try:
                line = stream.readline()
            except OSError:
                break
            if not line:
                break
            lines.append(line)
        self.status_stream = io.StringIO("".join(lines))  # python-apt's parser reads it
        try:
            for _ in lines:
                self.update_interface()
        finally:
            self.status_stream = stream

    def status_change(self, pkg: str, percent: float, status: str) -> None:
        whole = int(percent)
        if whole == self._last_percent:
            return
        self._last_percent = whole
        details = {"phase": self.phase, "percent": str(whole), "step": status}
        self._emit(details, False)

    def error(self, pkg: str, errormsg: str) -> None:
        self.errors.append(f"{pkg}: {errormsg}")

    def conffile(self, current: str, new: str) -> None:
        self.conffiles.append(current)

    def finish_update(self) -> None:
        self._emit({"phase": self.phase, "percent": "100"}, True)


class Throttle:
    """Passes an event on when forced, when its phase changed, or ``interval`` after the last."""

    def __init__(self, send: Callable[[Dict[str, str]], None], interval: float = 0.5) -> None:
        self._send = send
        self._interval = interval
        self._last_time = 0.0
        self._last_phase: Optional[str] = None

    def __call__(self, details: Dict[str, str], force: bool = False) -> None:
        now = time.monotonic()
        phase = details.get("phase")
        if force or phase != self._last_phase or now - self._last_time >= self._interval:
            self._last_time = now
            self._last_phase = phase
            self._send(details)
