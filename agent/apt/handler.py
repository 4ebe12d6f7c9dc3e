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
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Deque, Dict, List, Mapping, Optional, Sequence

from agent.apt.document import INVALID_DOCUMENT, AptRequest, check_allowed, parse_document
from agent.apt.protocol import CANCELED, INSTALL, REMOVE, TIMEOUT, WORKER_FAILED, WorkerConfig
from agent.apt.settings import AptSettings
from agent.errors import JobFailed, JobRejected
from agent.job import JobContext

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORKER_MODULE = "agent.apt.worker"
STDERR_TAIL_LINES = 20
KILL_GRACE_SECONDS = 5.0
POLL_SECONDS = 0.2
_EOF = object()


class AptUpdateHandler:
    """``handler(document, job) -> statusDetails`` for APT_UPDATE jobs.

    Raises JobRejected for a document that fails validation or names a package outside
    ``[apt] allowed_packages`` (no worker is started), JobFailed for a transaction that did not
    succeed (errorCode from the worker, or TIMEOUT, CANCELED, WORKER_FAILED). Re-running a job
    converges: what is installed already is reported ``already-installed``.
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
        config = WorkerConfig(
            request=request,
            job_id=str(job.job_id),
            root_dir=str(self.settings.root_dir) if self.settings.root_dir else None,
            lock_timeout_seconds=self.settings.lock_timeout_seconds,
            lists_max_age_minutes=self.settings.lists_max_age_minutes,
            min_free_space_mb=self.settings.min_free_space_mb,
            operation=operation,
        )
        message = _WorkerRun(self._command, config, job, self.settings).run()
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

    def run(self) -> Dict[str, Any]:
        """The worker's result message. Raises JobFailed (TIMEOUT, CANCELED, WORKER_FAILED)."""
        environment = dict(os.environ)
        path = environment.get("PYTHONPATH")
        environment["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
        started = time.monotonic()
        process = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment,
            cwd=str(PROJECT_ROOT),
            start_new_session=True,
        )
        self.job.log.info("apt worker started (pid %d)", process.pid)
        readers = [
            threading.Thread(
                target=self._read_messages, args=(process.stdout,), name="apt-worker-stdout"
            ),
            threading.Thread(
                target=self._read_log, args=(process.stderr,), name="apt-worker-stderr"
            ),
        ]
        for reader in readers:
            reader.daemon = True
            reader.start()
        try:
            self._send_request(process)
            result = self._watch(process, started + self.timeout)
        finally:
            self._stop(process)
            for reader in readers:
                reader.join(timeout=KILL_GRACE_SECONDS)
        if result is None:
            raise JobFailed(self._crash_reason(process.returncode), WORKER_FAILED,
                            {"log": "\n".join(self.stderr_tail)})
        return result

    def _send_request(self, process: subprocess.Popen) -> None:
        assert process.stdin is not None
        try:
            process.stdin.write(json.dumps(self.config.to_json()).encode())
            process.stdin.close()
        except BrokenPipeError:
            pass  # the worker died at once; _watch reports it

    def _watch(self, process: subprocess.Popen, deadline: float) -> Optional[Dict[str, Any]]:
        result: Optional[Dict[str, Any]] = None
        stop_sent = False
        while True:
            try:
                message = self.messages.get(timeout=POLL_SECONDS)
            except queue.Empty:
                message = None
            if message is _EOF:
                process.wait()
                return result
            if isinstance(message, dict):
                if message.get("event") == "progress" and isinstance(message.get("details"), dict):
                    self.job.report_progress(message["details"])
                elif message.get("event") == "result":
                    result = message
            if not stop_sent and self.job.should_stop():
                self.job.log.info("job should stop: asking the apt worker to stop between steps")
                process.send_signal(signal.SIGTERM)
                stop_sent = True
            if time.monotonic() >= deadline:
                self._kill(process)
                raise JobFailed(
                    f"the apt transaction did not finish within {self.timeout:g}s "
                    "([apt] job_timeout_seconds); it was killed, and the next APT_UPDATE job "
                    "repairs an interrupted dpkg first",
                    TIMEOUT,
                    {"log": "\n".join(self.stderr_tail)},
                )
            if stop_sent and result is None and process.poll() is not None:
                # Gone without a result after being asked to stop.
                raise JobFailed("the job was stopped", CANCELED)

    def _read_messages(self, stream: IO[bytes]) -> None:
        for raw in stream:
            try:
                message = json.loads(raw)
            except ValueError:
                self.job.log.warning("apt worker wrote a non-JSON line: %r", raw[:200])
                continue
            self.messages.put(message)
        self.messages.put(_EOF)

    def _read_log(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_tail.append(line)
            self.job.log.info("apt worker: %s", line)

    def _kill(self, process: subprocess.Popen) -> None:
        """Stop the worker's whole session (dpkg and maintainer scripts too)."""
        self.job.log.warning("killing the apt worker (pid %d) and its children", process.pid)
        for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, None)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def _stop(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            self._kill(process)

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
