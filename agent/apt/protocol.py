"""What passes between the APT handler and its worker process (pure: no I/O, no apt import).

The worker does one of two operations: ``install`` (an APT_UPDATE job) or ``remove`` (asked
only by the managed Remove-Application action; no APT_UPDATE document can ask for it). The
handler writes ``WorkerConfig.to_json()`` as one JSON object on the worker's stdin; the
worker answers with JSON lines on stdout: ``{"event": "progress", "details": {...}}`` events,
then one ``{"event": "result", "ok": true, "result": {...}}`` or ``{"event": "result",
"ok": false, "errorCode": ..., "reason": ..., "details": {...}, "result": {...}}``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Optional

from agent.apt.document import AptRequest, parse_request
from agent.errors import JobError, JobRejected

# Error codes of failed jobs. The worker reports all but the last two, which the handler adds.
NOT_FOUND = "NOT_FOUND"
VERSION_NOT_FOUND = "VERSION_NOT_FOUND"
HELD = "HELD"
DOWNGRADE = "DOWNGRADE"
REMOVALS = "REMOVALS"
ESSENTIAL = "ESSENTIAL"
OTHER_CHANGES = "OTHER_CHANGES"
REMOVE_FAILED = "REMOVE_FAILED"
LOCK_TIMEOUT = "LOCK_TIMEOUT"
DOWNLOAD_FAILED = "DOWNLOAD_FAILED"
NO_SPACE = "NO_SPACE"
INSTALL_FAILED = "INSTALL_FAILED"
UNTRUSTED = "UNTRUSTED"
BROKEN = "BROKEN"
CANCELED = "CANCELED"
TIMEOUT = "TIMEOUT"
WORKER_FAILED = "WORKER_FAILED"

# The worker's environment, and that of every dpkg it runs: nothing may ask a question.
NONINTERACTIVE_ENVIRONMENT = {
    "DEBIAN_FRONTEND": "noninteractive",
    "DEBIAN_PRIORITY": "critical",
    "NEEDRESTART_MODE": "a",
    "NEEDRESTART_SUSPEND": "1",
    "APT_LISTCHANGES_FRONTEND": "none",
    "UCF_FORCE_CONFFOLD": "1",
    "LC_ALL": "C.UTF-8",
}

INSTALL = "install"
REMOVE = "remove"
OPERATIONS = (INSTALL, REMOVE)


class WorkerFailure(JobError):
    """The worker's transaction cannot go on: an error code, a reason and extra details (the
    worker sends them as its ``ok: false`` result)."""

    def __init__(self, code: str, reason: str, details: Optional[Dict[str, str]] = None):
        super().__init__(reason, code, details)
        self.code: str = code
        # What the failed job still did, for the result (e.g. "packages", "rebootRequired").
        self.outcome: Dict[str, Any] = {}


@dataclass(frozen=True)
class WorkerConfig:
    """What the handler sends the worker: the checked request and the ``[apt]`` settings."""

    request: AptRequest
    job_id: str
    root_dir: Optional[str]
    lock_timeout_seconds: float
    lists_max_age_minutes: float
    min_free_space_mb: int
    operation: str = INSTALL
    # Where the job's versions before are kept across agent restarts (JSON {name: version or
    # null}); the worker reads it at its start and adds to it before dpkg runs.
    versions_file: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        """The JSON object the handler writes to the worker's stdin."""
        return {
            "request": self.request.to_json(),
            "jobId": self.job_id,
            "rootDir": self.root_dir,
            "lockTimeoutSeconds": self.lock_timeout_seconds,
            "listsMaxAgeMinutes": self.lists_max_age_minutes,
            "minFreeSpaceMb": self.min_free_space_mb,
            "operation": self.operation,
            "versionsFile": self.versions_file,
        }

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> WorkerConfig:
        """Read the stdin object; the request is checked again. Raises ValueError."""
        try:
            request = parse_request(data["request"])
        except JobRejected as error:
            raise ValueError(error.reason) from None
        root_dir = data.get("rootDir")
        if root_dir is not None and not (isinstance(root_dir, str) and os.path.isabs(root_dir)):
            raise ValueError(f"rootDir must be an absolute path, got {root_dir!r}")
        versions_file = data.get("versionsFile")
        if versions_file is not None and not (
            isinstance(versions_file, str) and os.path.isabs(versions_file)
        ):
            raise ValueError(f"versionsFile must be an absolute path, got {versions_file!r}")
        operation = data.get("operation", INSTALL)
        if operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}, got {operation!r}")
        if operation == REMOVE and any(package.version for package in request.packages):
            raise ValueError("a removal names packages without versions")
        return cls(
            request=request,
            job_id=re.sub(r"[^A-Za-z0-9_.:-]", "_", str(data.get("jobId", "")))[:64],
            root_dir=root_dir,
            lock_timeout_seconds=float(data["lockTimeoutSeconds"]),
            lists_max_age_minutes=float(data["listsMaxAgeMinutes"]),
            min_free_space_mb=int(data["minFreeSpaceMb"]),
            operation=operation,
            versions_file=versions_file,
        )


