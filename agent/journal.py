"""A small crash-safe record of the job in hand and of recently finished jobs.

Two files in the state directory. ``journal.json`` is a snapshot of the whole state, replaced
atomically: the new text is written to a temporary file, flushed to disk (fsync), renamed over
the old file, and the directory is flushed so the rename itself survives a power cut.
``journal.log`` holds the changes made since that snapshot, one line each, appended and made
durable with one ``fdatasync`` (a third of the cost of a snapshot, and what a job's two
journal writes pay). A new log's space is reserved at once (``LOG_RESERVED_BYTES``, which
holds about ``MAX_LOG_RECORDS`` lines), so that a line written into it does not change the
file's size and its ``fdatasync`` has no file system metadata to commit; the reserved space
reads as NUL bytes, which the reader skips. Each line carries a CRC-32 of its record and the
snapshot's generation: a line cut by a power cut (or whose tail never reached the disk) is
the last one and is ignored, because its write never returned, so nothing acted on it; lines
of an older generation (a log whose removal after a new snapshot was cut short) are skipped.
The first save of a journal, and every ``MAX_LOG_RECORDS``-th, writes a new snapshot and
starts a new log.

Should the journal still be unreadable (a disk that lies about fsync, a hand edit, a damaged
line with valid ones after it), ``Journal.load`` logs why, keeps the bad files aside for
inspection and starts from an empty journal: the Jobs service still knows which execution is
IN_PROGRESS, and the job client treats such an execution as interrupted (see job_client.py).
"""

from __future__ import annotations

import enum
import json
import logging
import os
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
FINAL_STATUSES = ("SUCCEEDED", "FAILED", "REJECTED")
MAX_FINISHED = 200
MAX_LOG_RECORDS = 500  # then the next save writes a new snapshot and starts a new log
LOG_RESERVED_BYTES = 128 * 1024  # a log line is about 200 bytes


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
        key, finished = (job_id, execution_number), self.finished
        if key in finished:  # rare: one scan in C first, the rebuild only when needed
            finished = tuple(other for other in finished if other != key)
        return JournalState(current=None, finished=(finished + (key,))[-MAX_FINISHED:])


def _record_to_json(record: Optional[JobRecord]) -> Optional[Dict[str, Any]]:
    if record is None:
        return None
    return {
        "jobId": record.job_id,
        "executionNumber": record.execution_number,
        "versionNumber": record.version_number,
        "phase": record.phase.value,
        "attempt": record.attempt,
        "status": record.status,
        "statusDetails": dict(record.status_details),
    }


def state_to_json(state: JournalState, generation: int = 0) -> str:
    """The snapshot text for ``state`` (``generation`` numbers the log that follows it)."""
    document: Dict[str, Any] = {
        "format": FORMAT_VERSION,
        "current": _record_to_json(state.current),
        "finished": [[job_id, number] for job_id, number in state.finished],
    }
    if generation:
        document["generation"] = generation
    return json.dumps(document, sort_keys=True) + "\n"


def _field(mapping: Mapping[str, Any], key: str, kind: type, optional: bool = False) -> Any:
    value = mapping.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{key}: expected {kind.__name__}, got {value!r}")
    return value


def state_from_json(text: str) -> JournalState:
    """Parse snapshot text. Raises ValueError naming what is wrong."""
    return _snapshot_from_json(text)[0]


def _snapshot_from_json(text: str) -> Tuple[JournalState, int]:
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    if document.get("format") != FORMAT_VERSION:
        raise ValueError(f"format: expected {FORMAT_VERSION}, got {document.get('format')!r}")
    generation = document.get("generation", 0)
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise ValueError(f"generation: expected a number, got {generation!r}")
    current = _record_from_json(document.get("current"))
    finished = document.get("finished", [])
    if not isinstance(finished, list) or not all(_is_finished_pair(item) for item in finished):
        raise ValueError(f"finished: expected [job id, execution number] pairs, got {finished!r}")
    state = JournalState(
        current=current, finished=tuple((job_id, number) for job_id, number in finished)
    )
    return state, generation


def _is_finished_pair(item: Any) -> bool:
    return (
        isinstance(item, list)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], int)
        and not isinstance(item[1], bool)
    )


def _record_from_json(raw: Any) -> Optional[JobRecord]:
    current = None
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
    return current


def _log_line(generation: int, before: JournalState, after: JournalState) -> bytes:
    """One log line taking ``before`` to ``after``: the job in hand, plus the execution
    finished on the way when that is all that changed in the finished list, else the list."""
    record: Dict[str, Any] = {"g": generation, "current": _record_to_json(after.current)}
    if after.finished != before.finished:
        last = after.finished[-1] if after.finished else None
        if last is not None and before.finish(*last).finished == after.finished:
            record["finish"] = list(last)
        else:
            record["finished"] = [list(pair) for pair in after.finished]
    text = json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(text), text)


def _apply_log_line(line: bytes, generation: int, state: JournalState) -> JournalState:
    """``state`` after the log line; ValueError for a damaged or malformed line."""
    if not line.endswith(b"\n") or len(line) < 10 or line[8:9] != b" ":
        raise ValueError("incomplete line")
    text = line[9:-1]
    if int(line[:8], 16) != zlib.crc32(text):
        raise ValueError("checksum mismatch")
    record = json.loads(text.decode("utf-8"))
    if not isinstance(record, dict) or not isinstance(record.get("g"), int):
        raise ValueError("not a journal record")
    if record["g"] != generation:
        return state  # left from before the snapshot: already in it
    if "finish" in record:
        pair = record["finish"]
        if not _is_finished_pair(pair):
            raise ValueError(f"finish: expected [job id, execution number], got {pair!r}")
        state = state.finish(pair[0], pair[1])
    elif "finished" in record:
        pairs = record["finished"]
        if not isinstance(pairs, list) or not all(_is_finished_pair(p) for p in pairs):
            raise ValueError(f"finished: expected [job id, execution number] pairs, got {pairs!r}")
        state = replace(state, finished=tuple((job_id, number) for job_id, number in pairs))
    return state.with_current(_record_from_json(record.get("current")))


def _replay(data: bytes, generation: int, state: JournalState) -> JournalState:
    """Apply the log's lines. A damaged line with no valid line after it is a write cut by a
    power cut (ignored); a damaged line followed by a valid one raises ValueError."""
    # The log's reserved space after the last line reads as NULs (so does a torn line's part
    # that never reached the disk): not lines.
    lines = data.rstrip(b"\0").splitlines(keepends=True)
    for index, line in enumerate(lines):
        problem = _problem_applying(line, generation, state)
        if isinstance(problem, JournalState):
            state = problem
            continue
        if any(isinstance(_problem_applying(later, generation, state), JournalState)
               for later in lines[index + 1:]):
            raise ValueError(f"log line {index + 1}: {problem}, with valid lines after it")
        log.info("ignored the journal log's last record, cut short (%s)", problem)
        break
    return state


def _problem_applying(line: bytes, generation: int, state: JournalState) -> Any:
    """The state after ``line``, or the error (a string) that makes it unreadable."""
    try:
        return _apply_log_line(line, generation, state)
    except (ValueError, UnicodeDecodeError) as error:
        return str(error)


class Journal:
    """The journal of a state directory: the snapshot ``journal.json`` and ``journal.log``."""

    FILE_NAME = "journal.json"
    LOG_NAME = "journal.log"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / self.FILE_NAME
        self.log_path = self.directory / self.LOG_NAME
        self._tmp_path = self.directory / (self.FILE_NAME + ".tmp")
        self.unreadable_path = self.directory / (self.FILE_NAME + ".unreadable")
        self.unreadable_log_path = self.directory / (self.LOG_NAME + ".unreadable")
        # Set by load(): True when a journal file was there and readable, so that what it
        # does not record did not happen (a handler never starts before RUNNING is saved).
        self.trusted = False
        self._generation = 0
        self._saved: Optional[JournalState] = None  # what the files hold; None: snapshot next
        self._log_records = 0
        self._log_end = 0  # where the log's next line goes

    def load(self) -> JournalState:
        """The saved state; an empty one when there is none or it cannot be read.

        Never raises: an unreadable journal is logged, moved to ``journal.json.unreadable``
        (and ``journal.log.unreadable``) and replaced by an empty state.
        """
        try:
            self._tmp_path.unlink()
            log.info("removed %s left by an interrupted write", self._tmp_path)
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("cannot remove %s: %s", self._tmp_path, error)
        self.trusted = False
        self._saved = None
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return JournalState()
        except (OSError, UnicodeDecodeError) as error:
            return self._set_aside(f"cannot read it: {error}")
        try:
            state, self._generation = _snapshot_from_json(text)
        except ValueError as error:  # json.JSONDecodeError is a ValueError
            return self._set_aside(f"unreadable content: {error}")
        try:
            state = _replay(self.log_path.read_bytes(), self._generation, state)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as error:
            return self._set_aside(f"unreadable log {self.log_path}: {error}")
        self.trusted = True
        return state

    def peek(self) -> JournalState:
        """The saved state, read without changing anything: for observers such as the status
        command, with the agent running or not (a snapshot written meanwhile may make it one
        step old, never a mix). Raises OSError (FileNotFoundError: no journal) or ValueError."""
        state, generation = _snapshot_from_json(self.path.read_text(encoding="utf-8"))
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return state
        return _replay(data, generation, state)

    def _set_aside(self, why: str) -> JournalState:
        log.error(
            "journal %s ignored (%s); kept as %s; an execution the service still shows "
            "IN_PROGRESS will be treated as interrupted",
            self.path,
            why,
            self.unreadable_path,
        )
        for path, aside in ((self.path, self.unreadable_path),
                            (self.log_path, self.unreadable_log_path)):
            try:
                os.replace(path, aside)
            except FileNotFoundError:
                pass
            except OSError as error:
                log.error("cannot move %s aside: %s", path, error)
        return JournalState()

    def save(self, state: JournalState) -> None:
        """Make ``state`` the journal's, durably: one appended log line (fdatasync), or a new
        snapshot on the first save and every ``MAX_LOG_RECORDS`` lines. Makes the state
        directory (mode 0700) if missing. Raises OSError."""
        if self._saved is None or self._log_records >= MAX_LOG_RECORDS:
            self._snapshot(state)
            return
        line = _log_line(self._generation, self._saved, state)
        created = not self._log_records  # the snapshot before removed the old log
        flags = os.O_WRONLY | (os.O_CREAT | os.O_TRUNC if created else 0)
        fd = os.open(self.log_path, flags, 0o600)
        try:
            if created:
                self._log_end = 0
                _reserve(fd, LOG_RESERVED_BYTES)
            _write_all(fd, line, self._log_end)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        if created:  # the new log's name must survive a power cut too
            self._sync_directory()
        self._log_end += len(line)
        self._log_records += 1
        self._saved = state

    def _snapshot(self, state: JournalState) -> None:
        generation = self._generation + 1
        data = state_to_json(state, generation).encode("utf-8")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        try:
            fd = os.open(self._tmp_path, flags, 0o600)
        except FileNotFoundError:  # no state directory (yet): make it only then
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self._tmp_path, flags, 0o600)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self._tmp_path, self.path)
        self._sync_directory()
        # The old log is of an older generation now: replay skips it should this be cut.
        try:
            self.log_path.unlink()
        except FileNotFoundError:
            pass
        self._generation = generation
        self._saved = state
        self._log_records = 0

    def _sync_directory(self) -> None:
        directory_fd = os.open(self.directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)


def _reserve(fd: int, size: int) -> None:
    """Allocate ``size`` bytes of the empty file ``fd`` (they read as NULs), if the file system
    can: without it the log still works, each line's fdatasync just commits the new size."""
    try:
        os.posix_fallocate(fd, 0, size)
    except (OSError, AttributeError) as error:  # AttributeError: no posix_fallocate (macOS)
        log.debug("cannot reserve space for the journal log: %s", error)


def _write_all(fd: int, data: bytes, offset: int = 0) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
