"""The APT_UPDATE handler: check the document, run the worker process, report its outcome.

``AptUpdateHandler.remove`` runs the worker's removal for the managed Remove-Application
action; an APT_UPDATE document can only ever install.

The agent process never imports python-apt: each job runs ``python -m agent.apt.worker`` in
its own session (so no fork happens in the threaded agent, the apt cache is gone when the job
ends, and a timeout can stop dpkg and its scripts together). The checked request goes to the
worker's stdin as JSON; its progress events are relayed with ``job.report_progress``.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import sys
import time
from pathlib import Path
from typing import Any, Deque, Dict, List, Mapping, Optional, Sequence

from agent.apt.document import INVALID_DOCUMENT, AptRequest, check_allowed, parse_document
from agent.apt.protocol import CANCELED, INSTALL, REMOVE, TIMEOUT, WORKER_FAILED, WorkerConfig
from agent.apt.settings import AptSettings
from agent.apt.versions import forget_versions, versions_path
from agent.errors import JobFailed, JobHandedOver, JobRejected
from agent.job import JobContext
from agent.process import POLL_SECONDS, Child, Lines, spawn

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORKER_MODULE = "agent.apt.worker"
STDERR_TAIL_LINES = 20
DPKG_PREFIX = "dpkg: "  # the worker's copy of dpkg's output
WARNING_PREFIXES = ("warning: ", "error: ", "critical: ")
# Progress phases of a running dpkg (the worker sends one before dpkg starts).
DPKG_PHASES = ("installing", "removing", "repairing_dpkg")
_EOF = object()


class AptUpdateHandler:
    """``handler(document, job) -> statusDetails`` for APT_UPDATE jobs.

    Raises JobRejected for a document that fails validation or names a package outside
    ``[apt] allowed_packages`` (no worker is started), JobFailed for a transaction that did not
    succeed (errorCode from the worker, or TIMEOUT, CANCELED, WORKER_FAILED), JobHandedOver when
    the agent stops while dpkg runs (the worker goes on; the next start runs the job again).
    Re-running a job converges: what is installed already is reported ``already-installed``,
    unless an earlier attempt of the same job installed it (its versions before are kept in
    ``<state_dir>/apt/``, see agent/apt/versions.py).
    """

    safe_to_rerun = True

    def __init__(
        self, settings: AptSettings, *, worker_command: Optional[Sequence[str]] = None
    ) -> None:
        self.settings = settings
        self._command = list(worker_command or [sys.executable, "-m", WORKER_MODULE])

    def __call__(self, document: Mapping[str, Any], job: JobContext) -> Dict[str, str]:
        request = parse_document(document, self.settings.allowed_packages)
        job.log.info(
            "APT_UPDATE %s%s", describe(request), " (dry run)" if request.dry_run else ""
        )
        details = self._run_worker(request, job, INSTALL)
        job.log.info("APT_UPDATE done: %s", details.get("result"))
        return details

    def remove(self, request: AptRequest, job: JobContext) -> Dict[str, str]:
        """Remove the request's packages (names only): Remove-Application, not APT_UPDATE.

        Each name must match ``[apt] allowed_packages``. Returns statusDetails (per package
        ``result``: ``removed``, ``not-installed`` or ``dry-run``). Raises JobRejected
        (NOT_ALLOWED, or INVALID_DOCUMENT for a pinned version), JobFailed for a removal the
        worker refused or that failed (ESSENTIAL, REMOVALS, OTHER_CHANGES, HELD, REMOVE_FAILED,
        LOCK_TIMEOUT...).
        """
        check_allowed(request, self.settings.allowed_packages)
        pinned = [package.name for package in request.packages if package.version]
        if pinned:
            raise JobRejected(
                f"a removal names packages without versions, got a version for "
                f"{', '.join(pinned)}",
                INVALID_DOCUMENT,
            )
        job.log.info("remove %s%s", describe(request), " (dry run)" if request.dry_run else "")
        details = self._run_worker(request, job, REMOVE)
        job.log.info("remove done: %s", details.get("result"))
        return details

    def _run_worker(self, request: AptRequest, job: JobContext, operation: str) -> Dict[str, str]:
        versions_file = None
        if self.settings.state_dir is not None and not request.dry_run:
            versions_file = versions_path(self.settings.state_dir, str(job.job_id))
            if getattr(job, "attempt", 1) <= 1:
                forget_versions(versions_file)  # left by an execution that was not resumed
        config = WorkerConfig(
            request=request,
            job_id=str(job.job_id),
            root_dir=str(self.settings.root_dir) if self.settings.root_dir else None,
            lock_timeout_seconds=self.settings.lock_timeout_seconds,
            lists_max_age_minutes=self.settings.lists_max_age_minutes,
            min_free_space_mb=self.settings.min_free_space_mb,
            operation=operation,
            versions_file=str(versions_file) if versions_file else None,
        )
        handed_over = False
        try:
            message = _WorkerRun(self._command, config, job, self.settings).run()
        except JobHandedOver:
            handed_over = True  # the next start reports the job: it needs the versions kept
            raise
        finally:
            if versions_file is not None and not handed_over:
                forget_versions(versions_file)
        if not message.get("ok"):
            raise JobFailed(
                str(message.get("reason") or "the apt worker failed"),
                str(message.get("errorCode") or WORKER_FAILED),
                failure_details(request, message),
            )
        return status_details(message.get("result") or {})


class _WorkerRun:
    """One worker process: started, fed, watched until it reports or is stopped."""

    def __init__(
        self, command: List[str], config: WorkerConfig, job: JobContext, settings: AptSettings
    ):
        self.command = command
        self.config = config
        self.job = job
        self.timeout = settings.job_timeout_seconds
        self.messages: queue.Queue[Any] = queue.Queue()
        self.stderr_tail: Deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.dpkg_running = False  # past the point of no return: the worker no longer stops
        self.handed_over = False

    def run(self) -> Dict[str, Any]:
        """The worker's result message. Raises JobFailed (TIMEOUT, CANCELED, WORKER_FAILED),
        or JobHandedOver when the agent stops while dpkg runs (the worker is left running:
        it lives in its own session and finishes the transaction without the agent)."""
        environment = dict(os.environ)
        path = environment.get("PYTHONPATH")
        environment["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
        started = time.monotonic()
        stdout, stderr = Lines(self._message), Lines(self._log_line)

        def stdout_end() -> None:
            stdout.close()
            self.messages.put(_EOF)

        child = spawn(
            self.command,
            stdout=stdout,
            stderr=stderr,
            stdout_end=stdout_end,
            stdin_pipe=True,
            env=environment,
            cwd=str(PROJECT_ROOT),
        )
        self.job.log.info("apt worker started (pid %d)", child.pid)
        try:
            child.send_input(json.dumps(self.config.to_json()).encode())
            result = self._watch(child, started + self.timeout)
        finally:
            if not self.handed_over:
                if child.poll() is None:
                    self._kill(child)
                child.join_readers()
                stderr.close()
        if result is None:
            raise JobFailed(self._crash_reason(child.returncode), WORKER_FAILED,
                            {"log": "\n".join(self.stderr_tail)})
        return result

    def _watch(self, child: Child, deadline: float) -> Optional[Dict[str, Any]]:
        result: Optional[Dict[str, Any]] = None
        stop_sent = False
        while True:
            try:
                message = self.messages.get(timeout=POLL_SECONDS)
            except queue.Empty:
                message = None
            if message is _EOF:
                child.wait()
                if result is None and stop_sent:
                    # Asked to stop before it could report (even before it could catch SIGTERM).
                    raise JobFailed("the job was stopped", CANCELED)
                return result
            if isinstance(message, dict):
                if message.get("event") == "progress" and isinstance(message.get("details"), dict):
                    self.job.report_progress(message["details"])
                    phase = message["details"].get("phase")
                    if phase:  # dpkg's phase lasts until the worker reports the next one
                        self.dpkg_running = phase in DPKG_PHASES
                elif message.get("event") == "result":
                    result = message
            if result is None and self.dpkg_running and self.job.agent_stopping():
                # Waiting would hold the agent's stop up for as long as dpkg runs (and for
                # ever when a maintainer script restarts the agent and waits for that).
                self.handed_over = True
                self.job.log.info(
                    "the agent stops while dpkg runs: apt worker pid %d goes on alone", child.pid
                )
                raise JobHandedOver(
                    "the agent stopped while dpkg was running; dpkg goes on, and the next start "
                    "waits for it and reports what dpkg shows"
                )
            if not stop_sent and self.job.should_stop():
                self.job.log.info("job should stop: asking the apt worker to stop between steps")
                child.signal(signal.SIGTERM)
                stop_sent = True
            if time.monotonic() >= deadline:
                self._kill(child)
                raise JobFailed(
                    f"the apt transaction did not finish within {self.timeout:g}s "
                    "([apt] job_timeout_seconds); it was killed, and the next APT_UPDATE job "
                    "repairs an interrupted dpkg first",
                    TIMEOUT,
                    {"log": "\n".join(self.stderr_tail)},
                )
            if stop_sent and result is None and child.poll() is not None:
                # Gone without a result after being asked to stop.
                raise JobFailed("the job was stopped", CANCELED)

    def _message(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            self.job.log.warning("apt worker wrote a non-JSON line: %r", raw[:200])
            return
        self.messages.put(message)

    def _log_line(self, raw: bytes) -> None:
        """One worker line into the job's log with one prefix: ``dpkg:`` (dpkg's output,
        prefixed by the worker) or ``apt worker:``."""
        line = raw.decode("utf-8", "replace").rstrip()
        self.stderr_tail.append(line)
        if line.startswith(DPKG_PREFIX):
            self.job.log.info("%s", line)
        elif line.startswith(WARNING_PREFIXES):
            self.job.log.warning("apt worker: %s", line.split(": ", 1)[1])
        else:
            self.job.log.info("apt worker: %s", line)

    def _kill(self, child: Child) -> None:
        """Stop the worker's whole session (dpkg and maintainer scripts too)."""
        self.job.log.warning("killing the apt worker (pid %d) and its children", child.pid)
        child.end_group()

    def _crash_reason(self, status: Optional[int]) -> str:
        tail = "\n".join(self.stderr_tail)
        if "No module named 'apt" in tail:
            return (
                f"python3-apt is not importable by {self.command[0]}: install the distribution's "
                "python3-apt (a venv needs --system-site-packages)"
            )
        return f"the apt worker exited with status {status} without a result"


def describe(request: AptRequest) -> str:
    """``alpha=2.0, beta`` for logs."""
    return ", ".join(
        package.name + (f"={package.version}" if package.version else "")
        for package in request.packages
    )


def status_details(result: Mapping[str, Any]) -> Dict[str, str]:
    """statusDetails of a successful job from the worker's result value (pure).

    One package: plain values (``versionBefore: 1.0``); several: ``name=value`` pairs joined by
    ``, ``. "none" stands for not installed.
    """
    packages = list(result.get("packages") or [])
    details: Dict[str, str] = {
        "result": _per_package(packages, "result"),
        "package": ", ".join(str(package["name"]) for package in packages),
        "versionBefore": _per_package(packages, "before"),
        "versionAfter": _per_package(packages, "after"),
    }
    if any(package.get("result") == "dry-run" for package in packages):
        details["versionTarget"] = _per_package(packages, "target")
    details["rebootRequired"] = "true" if result.get("rebootRequired") else "false"
    details.update(_state_details(result))
    if result.get("otherChanges"):
        details["otherChanges"] = ", ".join(result["otherChanges"])
    if result.get("notes"):
        details["notes"] = "; ".join(result["notes"])
    return details


def failure_details(request: AptRequest, message: Mapping[str, Any]) -> Dict[str, str]:
    """Extra statusDetails of a failed job (the reason and errorCode go first) (pure)."""
    details: Dict[str, str] = {"package": ", ".join(p.name for p in request.packages)}
    for key, value in (message.get("details") or {}).items():
        if key != "log":
            details.setdefault(str(key), str(value))
    state = message.get("result") or {}
    packages = list(state.get("packages") or [])
    if packages:  # what the requested packages are now, although the job failed
        details["result"] = _per_package(packages, "result")
        details["versionBefore"] = _per_package(packages, "before")
        details["versionAfter"] = _per_package(packages, "after")
    if "rebootRequired" in state:
        details["rebootRequired"] = "true" if state["rebootRequired"] else "false"
    details.update(_state_details(state))
    if state.get("notes"):
        details["notes"] = "; ".join(state["notes"])
    log = (message.get("details") or {}).get("log")
    if log:
        details["log"] = str(log)
    return details


def _state_details(result: Mapping[str, Any]) -> Dict[str, str]:
    return {
        "dpkgRepaired": str(result.get("dpkgRepaired", "false")),
        "listsRefreshed": str(result.get("listsRefreshed", "false")),
    }


def _per_package(packages: List[Mapping[str, Any]], key: str) -> str:
    def show(value: Any) -> str:
        return "none" if value is None else str(value)

    if len(packages) == 1:
        return show(packages[0].get(key))
    return ", ".join(f"{package['name']}={show(package.get(key))}" for package in packages)
