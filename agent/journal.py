"""A small crash-safe record of the job in hand and of recently finished jobs.

The journal is one JSON file in the state directory, replaced atomically: the new text is
written to a temporary file, flushed to disk (fsync), renamed over the old file, and the
directory is flushed so the rename itself survives a power cut. A reader therefore sees the
old journal or the new one, never a mix. Should the file still be unreadable (a disk that lies
about fsync, a hand edit), ``Journal.load`` logs why, keeps the bad file aside for inspection and
starts from an empty journal: the Jobs service still knows which execution is IN_PROGRESS, and
the job client treats such an execution as interrupted (see job_client.py).
"""

from __future__ import annotations

import enum
import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
FINAL_STATUSES = ("SUCCEEDED", "FAILED", "REJECTED")
MAX_FINISHED = 200


class Phase(str, enum.Enum):
    """How far the job in hand got."""

    CLAIMED = "CLAIMED"  # start-next accepted it; the handler has not started
    RUNNING = "RUNNING"  # the handler was started (``attempt`` counts the starts)
    FINAL = "FINAL"  # the final status is decided and not yet acknowledged by the service
    HANDED_OVER = "HANDED_OVER"  # the handler asked to go on at the next start (JobHandedOver)


@dataclass(frozen=True)
class JobRecord:
    """The job execution in hand."""

    job_id: str
    execution_number: int
    version_number: int
    phase: Phase
    attempt: int = 0
    status: Optional[str] = None  # the final status, in phase FINAL
    status_details: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> Tuple[str, int]:
        return (self.job_id, self.execution_number)


@dataclass(frozen=True)
class JournalState:
    """Everything the journal holds: the job in hand and the recently finished executions."""

    current: Optional[JobRecord] = None
    finished: Tuple[Tuple[str, int], ...] = ()  # (job id, execution number), oldest first

    def has_finished(self, job_id: str, execution_number: int) -> bool:
        """True when this execution was finished by this agent recently."""
        return (job_id, execution_number) in self.finished

    def with_current(self, record: Optional[JobRecord]) -> JournalState:
        """A copy with ``record`` as the job in hand."""
        return replace(self, current=record)

    def finish(self, job_id: str, execution_number: int) -> JournalState:
        """A copy with no job in hand and this execution remembered as finished."""
        finished = tuple(key for key in self.finished if key != (job_id, execution_number))
        finished = (finished + ((job_id, execution_number),))[-MAX_FINISHED:]
        return JournalState(current=None, finished=finished)


def state_to_json(state: JournalState) -> str:
    """The journal text for ``state``."""
    current: Optional[Dict[str, Any]] = None
    if state.current is not None:
        record = state.current
        current = {
            "jobId": record.job_id,
            "executionNumber": record.execution_number,
            "versionNumber": record.version_number,
            "phase": record.phase.value,
            "attempt": record.attempt,
            "status": record.status,
            "statusDetails": dict(record.status_details),
        }
    document = {
        "format": FORMAT_VERSION,
        "current": current,
        "finished": [[job_id, number] for job_id, number in state.finished],
    }
    return json.dumps(document, sort_keys=True) + "\n"


def _field(mapping: Mapping[str, Any], key: str, kind: type, optional: bool = False) -> Any:
    value = mapping.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{key}: expected {kind.__name__}, got {value!r}")
    return value


def state_from_json(text: str) -> JournalState:
    """Parse journal text. Raises ValueError naming what is wrong."""
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    if document.get("format") != FORMAT_VERSION:
        raise ValueError(f"format: expected {FORMAT_VERSION}, got {document.get('format')!r}")
    current = None
    raw = document.get("current")
    if raw is not None:
        if not isinstance(raw, dict):
            raise ValueError(f"current: expected an object, got {raw!r}")
        details = raw.get("statusDetails") or {}
        if not isinstance(details, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in details.items()
        ):
            raise ValueError(f"statusDetails: expected strings, got {details!r}")
        current = JobRecord(
            job_id=_field(raw, "jobId", str),
            execution_number=_field(raw, "executionNumber", int),
            version_number=_field(raw, "versionNumber", int),
            phase=Phase(_field(raw, "phase", str)),
            attempt=_field(raw, "attempt", int),
            status=_field(raw, "status", str, optional=True),
            status_details=details,
        )
        if current.phase is Phase.FINAL and current.status not in FINAL_STATUSES:
            raise ValueError(f"phase FINAL with status {current.status!r}")
    finished = document.get("finished", [])
    if not isinstance(finished, list) or not all(
        isinstance(item, list)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], int)
        for item in finished
    ):
        raise ValueError(f"finished: expected [job id, execution number] pairs, got {finished!r}")
    return JournalState(
        current=current, finished=tuple((job_id, number) for job_id, number in finished)
    )


class Journal:
    """The journal file ``journal.json`` in a state directory."""

    FILE_NAME = "journal.json"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / self.FILE_NAME
        self._tmp_path = self.directory / (self.FILE_NAME + ".tmp")
        self.unreadable_path = self.directory / (self.FILE_NAME + ".unreadable")
        # Set by load(): True when a journal file was there and readable, so that what it
        # does not record did not happen (a handler never starts before RUNNING is saved).
        self.trusted = False

    def load(self) -> JournalState:
        """The saved state; an empty one when there is none or it cannot be read.

        Never raises: an unreadable journal is logged, moved to ``journal.json.unreadable``
        and replaced by an empty state.
        """
        try:
            self._tmp_path.unlink()
            log.info("removed %s left by an interrupted write", self._tmp_path)
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("cannot remove %s: %s", self._tmp_path, error)
        self.trusted = False
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return JournalState()
        except (OSError, UnicodeDecodeError) as error:
            return self._set_aside(f"cannot read it: {error}")
        try:
            state = state_from_json(text)
        except ValueError as error:  # json.JSONDecodeError is a ValueError
            return self._set_aside(f"unreadable content: {error}")
        self.trusted = True
        return state

    def _set_aside(self, why: str) -> JournalState:
        log.error(
            "journal %s ignored (%s); kept as %s; an execution the service still shows "
            "IN_PROGRESS will be treated as interrupted",
            self.path,
            why,
            self.unreadable_path,
        )
        try:
            os.replace(self.path, self.unreadable_path)
        except OSError as error:
            log.error("cannot move %s aside: %s", self.path, error)
        return JournalState()

    def save(self, state: JournalState) -> None:
        """Replace the journal with ``state`` atomically and durably; make the state
        directory (mode 0700) if missing. Raises OSError."""
        data = state_to_json(state).encode("utf-8")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        try:
            fd = os.open(self._tmp_path, flags, 0o600)
        except FileNotFoundError:  # no state directory (yet): make it only then
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self._tmp_path, flags, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self._tmp_path, self.path)
        directory_fd = os.open(self.directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
