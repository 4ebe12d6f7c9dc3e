"""What ``jobs_agent.py status`` reports, read from the state directory alone.

The journal (``journal.json``, crash-safe) says which job is in hand; the status file
(``status.json``, written by ``agent.activity.StatusReporter``) says what the agent was doing,
since when, and how the last jobs ended; the kernel's lock table says whether an agent holds
``agent.lock`` right now. Nothing here connects anywhere or takes the lock, so it answers with
the agent stopped, and never disturbs a running one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from agent.activity import STATUS_FILE, status_line
from agent.errors import SettingsError
from agent.journal import Journal

LOCK_FILE = "agent.lock"
RECENT_SHOWN = 5


def lock_holder(lock_path: Path, locks_table: Path = Path("/proc/locks")) -> Optional[int]:
    """The pid holding a lock on ``lock_path`` per the kernel's table, or None.

    Read from ``/proc/locks`` (``N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE ...``), never by
    trying the lock: a status query must not make a starting agent find its lock taken.
    """
    try:
        info = os.stat(lock_path)
        table = locks_table.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":  # "->" marks a waiter, not a holder
            continue
        try:
            major, minor, inode = fields[5].split(":")
            pid = int(fields[4])
            found = (int(major, 16), int(minor, 16), int(inode))
        except ValueError:
            continue
        if found == (os.major(info.st_dev), os.minor(info.st_dev), info.st_ino):
            return pid
    return None


def _agent_alive(pid: Any) -> bool:
    """True when ``pid`` (from the status file) is a live jobs agent: the fallback when the
    lock table cannot be read."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"jobs_agent" in command or b"iot-jobs-agent" in command


def _iso(timestamp: Any) -> Optional[str]:
    if not isinstance(timestamp, (int, float)) or isinstance(timestamp, bool):
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _read_status_file(path: Path) -> Dict[str, Any]:
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError):
        return {}  # half a file from a disk that lied, or a hand edit: the journal still speaks
    return status if isinstance(status, dict) else {}


def read_status(state_dir: Path, *, where: str, now: Optional[float] = None) -> Dict[str, Any]:
    """The agent's status as a JSON-ready object (see docs/operating.md, "Is it working?").

    ``where`` names the setting that chose ``state_dir`` (``FILE: [agent] state_dir``) for the
    error message. Raises SettingsError when the directory is missing or cannot be read.
    """
    now = time.time() if now is None else now
    state_dir = Path(state_dir)
    if state_dir.exists() and not state_dir.is_dir():
        raise SettingsError(f"{where}: {str(state_dir)!r} is not a folder")
    if not state_dir.is_dir():
        raise SettingsError(
            f"{where}: {str(state_dir)!r} does not exist: no agent has run with these settings"
        )
    journal = Journal(state_dir)
    journal_problem = None
    current = None
    finished: List[Any] = []
    try:
        os.listdir(state_dir)
        saved = journal.peek()
    except FileNotFoundError:
        saved = None
    except PermissionError as error:
        raise SettingsError(
            f"{where}: cannot read {str(state_dir)!r}: {error.strerror} (run as the agent's "
            f"user, e.g. with sudo)"
        ) from None
    except OSError as error:
        raise SettingsError(f"{where}: cannot read {str(journal.path)!r}: {error}") from None
    except ValueError as error:  # UnicodeDecodeError and json errors are ValueErrors
        saved = None
        journal_problem = f"the journal {journal.path} cannot be read: {error}"
    if saved is not None:
        current = saved.current
        finished = list(saved.finished)

    status = _read_status_file(state_dir / STATUS_FILE)
    pid = lock_holder(state_dir / LOCK_FILE)
    if pid is None and status.get("state") != "stopped" and _agent_alive(status.get("pid")):
        pid = status["pid"]
    running = pid is not None
    if not running and status and status.get("state") != "stopped":
        status = dict(status, state="stopped", since=status.get("updated"))
    connected = running and status.get("connection") == "connected"

    current_job: Optional[Dict[str, Any]] = None
    live_job = status.get("job") if isinstance(status.get("job"), dict) else None
    if current is not None:
        current_job = {
            "jobId": current.job_id,
            "executionNumber": current.execution_number,
            "journalPhase": current.phase.value,
            "attempt": current.attempt,
            "phase": None,
            "since": None,
        }
        if current.status:
            current_job["status"] = current.status
        if live_job and live_job.get("jobId") == current.job_id:
            current_job["phase"] = live_job.get("phase")
            current_job["since"] = _iso(live_job.get("since"))

    recent: List[Dict[str, Any]] = []
    for entry in status.get("recent") or []:
        if isinstance(entry, dict) and isinstance(entry.get("jobId"), str):
            recent.append(
                {
                    "jobId": entry["jobId"],
                    "status": entry.get("status"),
                    "reason": entry.get("reason"),
                    "finished": _iso(entry.get("finished")),
                }
            )
    known = {entry["jobId"] for entry in recent}
    for job_id, _number in reversed(finished):  # the journal remembers ids, not statuses
        if job_id not in known:
            recent.append({"jobId": job_id, "status": None, "reason": None, "finished": None})
            known.add(job_id)

    line = status_line(status, now) if status else None
    if not running and line is None:
        line = "not running"
    return {
        "stateDir": str(state_dir),
        "running": running,
        "pid": pid,
        "connected": connected,
        "connectedSince": _iso(status.get("connectedSince")) if connected else None,
        "offlineSince": _iso(status.get("offlineSince")) if running and not connected else None,
        "lastError": status.get("lastError"),
        "state": line,
        "updated": _iso(status.get("updated")),
        "current_job": current_job,
        "recent": recent[:RECENT_SHOWN],
        "problems": [journal_problem] if journal_problem else [],
    }


def format_status(report: Dict[str, Any]) -> str:
    """``read_status``'s object as lines for a person."""
    lines = []
    if report["running"]:
        lines.append(f"agent: running (pid {report['pid']}): {report['state']}")
    else:
        lines.append(f"agent: not running; last state: {report['state']}")
    if report["running"]:
        if report["connected"]:
            lines.append(f"connected since {report['connectedSince']}")
        else:
            since = report["offlineSince"]
            lines.append("not connected" + (f" since {since}" if since else ""))
        if report["lastError"]:
            lines.append(f"last connection error: {report['lastError']}")
    job = report["current_job"]
    if job is None:
        lines.append("current job: none")
    else:
        phase = job["phase"] or job["journalPhase"].lower()
        text = f"current job: {job['jobId']} ({phase}, attempt {job['attempt']})"
        if job.get("since"):
            text += f" since {job['since']}"
        if not report["running"]:
            text += "; the next start of the agent resumes or reports it"
        lines.append(text)
    if report["recent"]:
        lines.append("recent jobs (newest first):")
        for entry in report["recent"]:
            text = f"  {entry['jobId']}: {entry['status'] or 'finished (status not recorded)'}"
            if entry["finished"]:
                text += f" at {entry['finished']}"
            if entry["reason"]:
                text += f" ({entry['reason']})"
            lines.append(text)
    else:
        lines.append("recent jobs: none")
    lines.extend(report["problems"])
    lines.append(f"state directory: {report['stateDir']}")
    return "\n".join(lines)
