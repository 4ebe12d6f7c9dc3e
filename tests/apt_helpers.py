"""APT test helpers: the session's test packages, a real job context that keeps its progress,
running a job on a throwaway root, holding a lock from another process. The pytest fixtures are in
apt_fixtures.py (load them with ``pytest_plugins = ("apt_fixtures",)``).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Dict, List, Optional

from agent.apt.handler import AptUpdateHandler
from agent.apt.settings import AptSettings
from agent.job import JobContext
from local_jobs.apt_repo import AptRoot, Package, failing_script, reboot_required_script

POSTINST_FAILURE = "bad: cannot start the service"
SLOW_ONCE = (
    "#!/bin/sh\n"
    'if [ "$1" = configure ] && [ ! -e "$DPKG_ROOT/slow-once" ]; then\n'
    '    touch "$DPKG_ROOT/slow-once"; sleep 60\n'
    "fi\n"
)
# A postinst that takes 2 s and marks its start and its end (dpkg ran it to completion).
FINISHING = (
    "#!/bin/sh\n"
    'if [ "$1" = configure ]; then\n'
    '    touch "$DPKG_ROOT/finishing-started"; sleep 2; touch "$DPKG_ROOT/finishing-done"\n'
    "fi\n"
)

PACKAGES = (
    Package("alpha", "1.0"),
    Package("alpha", "2.0"),
    Package("beta", "1.0", depends=("gamma (>= 1.0)",)),
    Package("gamma", "1.0"),
    Package("delta", "1.0", conflicts=("alpha",)),
    Package("bad", "1.0", scripts={"postinst": failing_script(POSTINST_FAILURE)}),
    Package("needs-reboot", "1.0", scripts={"postinst": reboot_required_script()}),
    Package("slow", "1.0", scripts={"postinst": SLOW_ONCE}),
    Package("finishing", "1.0", scripts={"postinst": FINISHING}),
    Package("orphan", "1.0", depends=("missing-lib (>= 1.0)",)),
    Package("epsilon", "1.0", provides=("virtual-thing",)),
    Package("big", "1.0", payload_bytes=300_000),
)

# Holds a POSIX lock (what apt and dpkg use) on a file until killed or SECONDS pass.
HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o640)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


_SENT: weakref.WeakKeyDictionary[JobContext, List[Dict[str, str]]] = weakref.WeakKeyDictionary()


def new_job(job_id: str = "job-apt-1", attempt: int = 1) -> JobContext:
    """The real JobContext a handler gets, its progress kept in order as the job client would
    send it (``progress_of``). Stop it the way the job client does: ``job._request_stop(
    StopReason.AGENT_STOPPING)``, or ``StopReason.SERVICE_ENDED`` for a canceled job."""
    sent: List[Dict[str, str]] = []

    def send() -> None:
        details = job._take_unsent()
        if details is not None:
            sent.append(details)

    job = JobContext(job_id, 1, attempt, wake=send)
    _SENT[job] = sent
    return job


def progress_of(job: JobContext) -> List[Dict[str, str]]:
    """Every progress update ``job`` (made by ``new_job``) reported, in order."""
    return list(_SENT[job])


def phases_of(job: JobContext) -> List[str]:
    return [entry.get("phase", "") for entry in progress_of(job)]


def apt_settings(root: AptRoot, **overrides: Any) -> AptSettings:
    """Settings for ``root``: everything allowed, short lock wait, unless overridden."""
    values: Dict[str, Any] = dict(
        root_dir=root.path,
        allowed_packages=("*",),
        lock_timeout_seconds=10.0,
        lists_max_age_minutes=1440.0,
        job_timeout_seconds=60.0,
        min_free_space_mb=1,
    )
    values.update(overrides)
    return AptSettings(**values)


def run_job(
    root: AptRoot, document: Dict[str, Any], job: Optional[JobContext] = None, **settings: Any
) -> Dict[str, str]:
    """Run an APT_UPDATE job on ``root`` through the real handler and worker."""
    handler = AptUpdateHandler(apt_settings(root, **settings))
    return handler(document, job or new_job())


class JobThread:
    """An APT_UPDATE job run on ``root`` in a thread (see ``run_job``), so a test can act
    while it runs; ``result()`` joins it and returns its details or raises its error."""

    def __init__(
        self, root: AptRoot, document: Dict[str, Any], job: JobContext, **settings: Any
    ) -> None:
        self.job = job
        self._outcome: Dict[str, Any] = {}
        self._thread = threading.Thread(
            target=self._run, args=(root, document, settings), name="apt-job", daemon=True
        )
        self._thread.start()

    def _run(self, root: AptRoot, document: Dict[str, Any], settings: Dict[str, Any]) -> None:
        try:
            self._outcome["details"] = run_job(root, document, self.job, **settings)
        except BaseException as error:  # handed to the test thread by result()
            self._outcome["error"] = error

    def wait_for_phase(self, phase: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while phase not in phases_of(self.job):
            assert self._thread.is_alive(), f"the job ended before {phase}: {self._outcome}"
            sent = progress_of(self.job)
            assert time.monotonic() < deadline, f"no {phase} within {timeout}s: {sent}"
            time.sleep(0.05)

    def result(self, timeout: float = 60.0) -> Dict[str, str]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the job did not end"
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["details"]


class LockHolder:
    """Another process holding ``path`` locked (the way apt-get or unattended-upgrades do)."""

    def __init__(self, path: Path, seconds: float = 120.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "locked"

    @property
    def pid(self) -> int:
        return self.process.pid

    def release(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
