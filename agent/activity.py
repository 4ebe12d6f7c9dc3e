"""What the agent is doing right now, told to whoever shows it (systemd STATUS=, the status file).

``JobClient`` calls these methods on the protocol thread as its state changes; they must be
cheap and never raise. The base class does nothing: the agent wires in ``StatusReporter``,
which writes the state directory's status file (``status.json``, read by
``jobs_agent.py status``) and systemd's ``STATUS=`` line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

log = logging.getLogger(__name__)

# The status file is written at most this often (seconds), so draining a queue writes it a
# few times a second instead of twice per job; flush(), stopped() and a change of these keys
# (connecting, connected, offline, stopping) write at once.
WRITE_INTERVAL_SECONDS = 0.25
URGENT_KEYS = ("state", "connection", "stopping")


class Activity:
    """Receives the agent's state changes; every method is a no-op here."""

    def connecting(self, error: Optional[str] = None) -> None:
        """Connecting (again); ``error`` says why the last attempt failed, if one did."""

    def connected(self) -> None:
        """Connected and subscribed: idle unless a job runs."""

    def offline(self) -> None:
        """The connection went down."""

    def job_started(self, job_id: str, attempt: int) -> None:
        """A handler started for ``job_id``."""

    def job_phase(self, job_id: str, phase: str) -> None:
        """The running job reported progress; ``phase`` is a short word such as downloading."""

    def job_handed_over(self, job_id: str, reason: str) -> None:
        """The running job is left to the next start of the agent."""

    def job_finished(self, job_id: str, status: str, reason: Optional[str] = None) -> None:
        """The final status of ``job_id`` is decided (SUCCEEDED, FAILED, REJECTED, ...)."""

    def stopping(self) -> None:
        """The agent is shutting down."""


STATUS_FILE = "status.json"
STATUS_FORMAT = 1
RECENT_JOBS = 10  # finished jobs the status file remembers, newest first


def _clock_text(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def status_line(status: Mapping[str, Any], now: float) -> str:
    """One line saying what the agent is doing, from a status file's content (see
    ``StatusReporter``): what ``systemctl status`` and ``jobs_agent.py status`` show."""
    job = status.get("job") or None
    connection = status.get("connection")
    error = status.get("lastError")
    offline_since = status.get("offlineSince")
    if status.get("state") == "stopped":
        return f"stopped at {_clock_text(status.get('since') or now)}"
    if job and job.get("handingOver") is not None:
        line = f"handing over job {job.get('jobId')} to the next start"
        reason = job.get("handingOver")
        return f"{line}: {reason}" if reason else line
    if status.get("stopping"):
        return f"stopping, finishing job {job.get('jobId')}" if job else "stopping"
    if job:
        line = f"running job {job.get('jobId')} (phase {job.get('phase') or 'starting'})"
        if connection != "connected" and offline_since is not None:
            line += f"; offline for {max(0, int(now - offline_since))} s"
        return line
    if connection == "connected":
        since = status.get("connectedSince")
        return "idle, listening for jobs" + (
            f" (connected since {_clock_text(since)})" if since else ""
        )
    if connection == "offline" and offline_since is not None:
        line = f"offline for {max(0, int(now - offline_since))} s"
    else:
        since = offline_since or status.get("since") or now
        line = f"connecting since {_clock_text(since)}"
    return f"{line} (last error: {error})" if error else line


class StatusReporter(Activity):
    """Keeps ``<state_dir>/status.json`` and systemd's ``STATUS=`` line up to date.

    The file is replaced atomically (written beside it, then renamed), so a reader such as
    ``jobs_agent.py status`` sees the old content or the new, never a mix; it survives the
    agent, so it tells what the agent last did after it stopped. ``notifier`` needs only a
    ``status(text)`` method (agent/systemd_notify.py's SystemdNotifier). Every method is safe
    to call from any thread and never raises: a failed write is logged once.

    The methods change the state and send ``STATUS=`` at once; the file is written by the
    reporter's own thread ("status-file"), which writes the latest state and skips the ones
    it never got to, at most every ``WRITE_INTERVAL_SECONDS`` (a change of ``URGENT_KEYS`` at
    once). A replace costs 1-2 ms on ext4 (a rename over a file flushes its data), twice per
    job: on the protocol thread it delayed every job's next request. ``flush()`` writes the
    latest state at once and waits until the file holds it; ``stopped()`` flushes.
    """

    def __init__(
        self,
        state_dir: Path,
        notifier: Any = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(state_dir) / STATUS_FILE
        self._tmp_path = self.path.with_name(STATUS_FILE + ".tmp")
        self._notifier = notifier
        self._clock = clock
        self._lock = threading.Lock()  # guards _status and the counters below
        self._changed = threading.Condition(self._lock)
        self._version = 0  # changes made to _status
        self._written = 0  # the version the file holds (or failed to take)
        self._flush_wanted = False  # flush() waits: write without waiting out the interval
        self._writer: Optional[threading.Thread] = None
        self._last_line: Optional[str] = None
        self._write_failed = False
        now = clock()
        self._status: Dict[str, Any] = {
            "format": STATUS_FORMAT,
            "pid": os.getpid(),
            "started": now,
            "since": now,
            "state": "running",
            "connection": "connecting",
            "connectedSince": None,
            "offlineSince": now,
            "lastError": None,
            "stopping": False,
            "job": None,
            "recent": self._previous_recent(),
        }

    def _previous_recent(self) -> List[Dict[str, Any]]:
        """The finished jobs a previous run recorded, so a restart does not forget them."""
        try:
            recent = json.loads(self.path.read_text(encoding="utf-8")).get("recent")
        except (OSError, ValueError, AttributeError):
            return []
        if not isinstance(recent, list):
            return []
        return [entry for entry in recent if isinstance(entry, dict)][:RECENT_JOBS]

    # Activity

    def connecting(self, error: Optional[str] = None) -> None:
        def change(status: Dict[str, Any], now: float) -> None:
            if status["connection"] == "connected":
                status["offlineSince"] = now
                status["connectedSince"] = None
            status["connection"] = "connecting"
            if error:
                status["lastError"] = " ".join(str(error).split())[:300]

        self._update(change)

    def connected(self) -> None:
        def change(status: Dict[str, Any], now: float) -> None:
            if status["connection"] != "connected":
                status["connectedSince"] = now
            status["connection"] = "connected"
            status["offlineSince"] = None
            status["lastError"] = None

        self._update(change)

    def offline(self) -> None:
        def change(status: Dict[str, Any], now: float) -> None:
            if status["connection"] == "connected" or status["offlineSince"] is None:
                status["offlineSince"] = now
            status["connection"] = "offline"
            status["connectedSince"] = None

        self._update(change)

    def job_started(self, job_id: str, attempt: int) -> None:
        def change(status: Dict[str, Any], now: float) -> None:
            status["job"] = {
                "jobId": job_id,
                "attempt": attempt,
                "phase": None,
                "since": now,
                "handingOver": None,
            }

        self._update(change)

    def job_phase(self, job_id: str, phase: str) -> None:
        def change(status: Dict[str, Any], now: float) -> None:
            job = status["job"]
            if job is not None and job["jobId"] == job_id:
                job["phase"] = " ".join(str(phase).split())[:100]

        self._update(change)

    def job_handed_over(self, job_id: str, reason: str) -> None:
        def change(status: Dict[str, Any], now: float) -> None:
            job = status["job"]
            if job is None or job["jobId"] != job_id:
                job = status["job"] = {"jobId": job_id, "attempt": None, "phase": None}
                job["since"] = now
            job["handingOver"] = reason or ""

        self._update(change)

    def job_finished(self, job_id: str, status: str, reason: Optional[str] = None) -> None:
        def change(current: Dict[str, Any], now: float) -> None:
            if current["job"] is not None and current["job"]["jobId"] == job_id:
                current["job"] = None
            entry = {"jobId": job_id, "status": status, "reason": reason, "finished": now}
            others = [e for e in current["recent"] if e.get("jobId") != job_id]
            current["recent"] = [entry, *others][:RECENT_JOBS]

        self._update(change)

    def stopping(self) -> None:
        def change(status: Dict[str, Any], now: float) -> None:
            status["stopping"] = True

        self._update(change)

    # for jobs_agent.py's main loop, not the job client

    def observe(self, connected: Optional[bool]) -> None:
        """What the main loop sees of the connection now and then (None: not ready yet);
        also refreshes the line, as an "offline for N s" count grows while nothing happens."""

        def change(status: Dict[str, Any], now: float) -> None:
            if connected and status["connection"] != "connected":
                status["connectedSince"] = now
                status["connection"] = "connected"
                status["offlineSince"] = None
            elif connected is False and status["connection"] == "connected":
                status["connection"] = "offline"
                status["offlineSince"] = now
                status["connectedSince"] = None

        self._update(change)

    def stopped(self) -> None:
        """The agent has stopped: the file says so from now on."""

        def change(status: Dict[str, Any], now: float) -> None:
            status["state"] = "stopped"
            status["since"] = now
            status["connection"] = "offline"
            status["connectedSince"] = None
            if status["job"] is not None and status["job"].get("handingOver") is None:
                status["job"] = None

        self._update(change)
        self.flush()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` seconds until the file holds every change made so far (or
        its write failed and was logged); False if it did not happen in time."""
        with self._changed:
            if self._written < self._version:
                self._flush_wanted = True
                self._changed.notify_all()
            return self._changed.wait_for(lambda: self._written >= self._version, timeout)

    def snapshot(self) -> Dict[str, Any]:
        """A copy of the state the status file is given (its writer may not have caught up)."""
        with self._lock:
            return json.loads(json.dumps(self._status))

    def _update(self, change: Callable[[Dict[str, Any], float], None]) -> None:
        with self._lock:
            # A copy two levels deep is enough to see a change: the changes above set keys of
            # the state or of its "job", and give "recent" a new list (never changing an entry).
            before = {
                key: value.copy() if isinstance(value, (dict, list)) else value
                for key, value in self._status.items()
            }
            now = self._clock()
            change(self._status, now)
            line = status_line(self._status, now)
            self._status["line"] = line
            if self._status == before:
                return  # the same phase reported again: nothing to write or send
            self._status["updated"] = now
            self._version += 1
            if any(before[key] != self._status[key] for key in URGENT_KEYS):
                self._flush_wanted = True  # not a job's churn: written at once
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name="status-file", daemon=True
                )
                self._writer.start()
            self._changed.notify_all()
            if line != self._last_line and self._notifier is not None:
                self._notifier.status(line)  # logs a failure, never raises
            self._last_line = line

    def _write_loop(self) -> None:
        """The writer thread: write the newest state whenever it changed, outside the lock,
        at most every WRITE_INTERVAL_SECONDS unless flush() waits."""
        next_write = 0.0
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._written < self._version)
                pause = next_write - time.monotonic()
                if pause > 0:
                    self._changed.wait_for(lambda: self._flush_wanted, pause)
                self._flush_wanted = False
                version = self._version
                data = json.dumps(self._status, sort_keys=True) + "\n"
            next_write = time.monotonic() + WRITE_INTERVAL_SECONDS
            self._write(data)
            with self._changed:
                self._written = version
                self._changed.notify_all()

    def _write(self, data: str) -> None:
        try:
            with open(self._tmp_path, "w", encoding="utf-8") as stream:
                stream.write(data)
            os.replace(self._tmp_path, self.path)
        except OSError as error:
            if not self._write_failed:
                log.warning("cannot write the status file %s: %s", self.path, error)
            self._write_failed = True
        else:
            self._write_failed = False
