"""SQLite storage of jobs and job executions: values in, values out, no service rules.

One connection, guarded by a lock, in WAL mode. Every write is committed before the call
returns, so a service killed at any point restarts from what its clients were told.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from local_jobs.model import (
    ExecutionStatus,
    Job,
    JobExecution,
    JobStatus,
    RetryCriterion,
    RetryFailureType,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    document TEXT NOT NULL,
    targets TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_updated_at REAL NOT NULL,
    description TEXT,
    completed_at REAL,
    in_progress_timeout_minutes INTEGER,
    retry_criteria TEXT NOT NULL DEFAULT '[]',
    force_canceled INTEGER NOT NULL DEFAULT 0,
    reason_code TEXT,
    comment TEXT
);
CREATE TABLE IF NOT EXISTS executions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    thing_name TEXT NOT NULL,
    execution_number INTEGER NOT NULL,
    status TEXT NOT NULL,
    version_number INTEGER NOT NULL,
    queued_at REAL NOT NULL,
    last_updated_at REAL NOT NULL,
    started_at REAL,
    status_details TEXT NOT NULL DEFAULT '{}',
    force_canceled INTEGER NOT NULL DEFAULT 0,
    retry_attempt INTEGER NOT NULL DEFAULT 0,
    in_progress_deadline REAL,
    step_deadline REAL,
    UNIQUE (job_id, thing_name, execution_number)
);
CREATE INDEX IF NOT EXISTS executions_by_thing ON executions (thing_name, status);
CREATE INDEX IF NOT EXISTS executions_by_job ON executions (job_id, thing_name);
-- The timer's queries (expired_executions, next_deadline) read IN_PROGRESS rows only.
CREATE INDEX IF NOT EXISTS executions_by_status ON executions (status);
-- How often each thing's set of pending (QUEUED or IN_PROGRESS) executions has changed,
-- kept by the triggers below in the same transaction as the change itself.
CREATE TABLE IF NOT EXISTS pending_changes (
    thing_name TEXT PRIMARY KEY,
    changes INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS pending_insert AFTER INSERT ON executions
WHEN NEW.status IN ('QUEUED', 'IN_PROGRESS')
BEGIN
    INSERT OR IGNORE INTO pending_changes VALUES (NEW.thing_name, 0);
    UPDATE pending_changes SET changes = changes + 1 WHERE thing_name = NEW.thing_name;
END;
CREATE TRIGGER IF NOT EXISTS pending_update AFTER UPDATE OF status ON executions
WHEN (OLD.status IN ('QUEUED', 'IN_PROGRESS')) != (NEW.status IN ('QUEUED', 'IN_PROGRESS'))
BEGIN
    INSERT OR IGNORE INTO pending_changes VALUES (NEW.thing_name, 0);
    UPDATE pending_changes SET changes = changes + 1 WHERE thing_name = NEW.thing_name;
END;
CREATE TRIGGER IF NOT EXISTS pending_delete AFTER DELETE ON executions
WHEN OLD.status IN ('QUEUED', 'IN_PROGRESS')
BEGIN
    UPDATE pending_changes SET changes = changes + 1 WHERE thing_name = OLD.thing_name;
END;
"""

_EXECUTION_COLUMNS = (
    "job_id, thing_name, execution_number, status, version_number, queued_at, last_updated_at, "
    "started_at, status_details, force_canceled, retry_attempt, in_progress_deadline, "
    "step_deadline"
)
_JOB_COLUMNS = (
    "job_id, document, targets, status, created_at, last_updated_at, description, completed_at, "
    "in_progress_timeout_minutes, retry_criteria, force_canceled, reason_code, comment"
)
_PENDING = (ExecutionStatus.QUEUED.value, ExecutionStatus.IN_PROGRESS.value)
# The head of a thing's queue: IN_PROGRESS executions first, then QUEUED ones.
_PENDING_ORDER = (ExecutionStatus.IN_PROGRESS.value, ExecutionStatus.QUEUED.value)


class Store:
    """Jobs and executions in one SQLite file; every method is thread-safe."""

    def __init__(self, path: os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection_lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._connection_lock:
            self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes: all are committed together or none (nested calls join the outer one)."""
        with self._connection_lock:
            if self._db.in_transaction:
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args=()) -> List[tuple]:
        with self._connection_lock:
            return self._db.execute(sql, args).fetchall()

    def _execute(self, sql: str, args=()) -> None:
        with self._connection_lock:
            self._db.execute(sql, args)

    # jobs

    def insert_job(self, job: Job) -> None:
        self._execute(
            f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", _job_row(job)
        )

    def update_job(self, job: Job) -> None:
        row = _job_row(job)
        sets = ", ".join(f"{c.strip()} = ?" for c in _JOB_COLUMNS.split(",")[1:])
        self._execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", row[1:] + (job.job_id,))

    def get_job(self, job_id: str) -> Optional[Job]:
        rows = self._query(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def list_jobs(self) -> List[Job]:
        return [_job(r) for r in self._query(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY seq")]

    def delete_job(self, job_id: str) -> None:
        with self.transaction():
            self._execute("DELETE FROM executions WHERE job_id = ?", (job_id,))
            self._execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    # executions

    def insert_execution(self, execution: JobExecution) -> None:
        self._execute(
            f"INSERT INTO executions ({_EXECUTION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            _execution_row(execution),
        )

    def update_execution(self, execution: JobExecution) -> None:
        row = _execution_row(execution)
        sets = ", ".join(f"{c.strip()} = ?" for c in _EXECUTION_COLUMNS.split(",")[3:])
        self._execute(
            f"UPDATE executions SET {sets} "
            "WHERE job_id = ? AND thing_name = ? AND execution_number = ?",
            row[3:] + row[:3],
        )

    def get_execution(
        self, job_id: str, thing_name: str, execution_number: Optional[int] = None
    ) -> Optional[JobExecution]:
        """The given execution, or the latest one of the job on the thing."""
        if execution_number is None:
            rows = self._query(
                f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE job_id = ? AND thing_name = ?"
                " ORDER BY execution_number DESC LIMIT 1",
                (job_id, thing_name),
            )
        else:
            rows = self._query(
                f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE job_id = ? AND thing_name = ?"
                " AND execution_number = ?",
                (job_id, thing_name, execution_number),
            )
        return _execution(rows[0]) if rows else None

    def executions_of_job(self, job_id: str) -> List[JobExecution]:
        """Every execution of the job, oldest first."""
        rows = self._query(
            f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE job_id = ? ORDER BY seq", (job_id,)
        )
        return [_execution(r) for r in rows]

    def latest_executions_of_job(self, job_id: str) -> List[JobExecution]:
        """The latest execution of the job on each thing, in the order they were first queued."""
        rows = self._query(
            f"SELECT {_EXECUTION_COLUMNS} FROM executions e WHERE job_id = ? AND execution_number ="
            " (SELECT MAX(execution_number) FROM executions x"
            "  WHERE x.job_id = e.job_id AND x.thing_name = e.thing_name)"
            " ORDER BY (SELECT MIN(seq) FROM executions y"
            "  WHERE y.job_id = e.job_id AND y.thing_name = e.thing_name)",
            (job_id,),
        )
        return [_execution(r) for r in rows]

    def latest_executions_of_thing(self, thing_name: str) -> List[JobExecution]:
        """The latest execution of each job on the thing, in job creation order."""
        rows = self._query(
            f"SELECT {', '.join('e.' + c.strip() for c in _EXECUTION_COLUMNS.split(','))}"
            " FROM executions e JOIN jobs j ON j.job_id = e.job_id"
            " WHERE e.thing_name = ? AND e.execution_number ="
            " (SELECT MAX(execution_number) FROM executions x"
            "  WHERE x.job_id = e.job_id AND x.thing_name = e.thing_name)"
            " ORDER BY j.seq",
            (thing_name,),
        )
        return [_execution(r) for r in rows]

    def pending_executions(
        self, thing_name: str, limit: Optional[int] = None
    ) -> List[JobExecution]:
        """The thing's IN_PROGRESS executions, then its QUEUED ones, each in queue order.

        ``limit`` keeps only the first ones: the index on (thing_name, status) holds them in
        queue order, so the head of a long queue costs no more than that of a short one.
        """
        found: List[JobExecution] = []
        for status in _PENDING_ORDER:
            wanted = -1 if limit is None else limit - len(found)
            if wanted == 0:
                break
            rows = self._query(
                f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE thing_name = ? AND status = ?"
                " ORDER BY seq LIMIT ?",
                (thing_name, status, wanted),
            )
            found.extend(_execution(r) for r in rows)
        return found

    def pending_shape(self, thing_name: str) -> Tuple[int, Optional[int]]:
        """How often the thing's pending set has changed, and the row id of its head (or None).

        Both come from indexes, whatever the queue's length: what the service compares before
        and after a change to decide on ``notify`` and ``notify-next``. An execution enters
        the pending set only when inserted and leaves it for good (a terminal status is
        final), so the set differs exactly when the count of changes does.
        """
        with self._connection_lock:
            rows = self._db.execute(
                "SELECT changes FROM pending_changes WHERE thing_name = ?", (thing_name,)
            ).fetchall()
            changes = rows[0][0] if rows else 0
            for status in _PENDING_ORDER:
                rows = self._db.execute(
                    "SELECT seq FROM executions WHERE thing_name = ? AND status = ?"
                    " ORDER BY seq LIMIT 1",
                    (thing_name, status),
                ).fetchall()
                if rows:
                    return changes, rows[0][0]
            return changes, None

    def next_deadline(self) -> Optional[float]:
        """The earliest timer deadline of any IN_PROGRESS execution."""
        rows = self._query(
            "SELECT MIN(MIN(COALESCE(in_progress_deadline, 1e300), COALESCE(step_deadline, 1e300)))"
            " FROM executions WHERE status = 'IN_PROGRESS'"
        )
        value = rows[0][0] if rows else None
        return None if value is None or value >= 1e300 else value

    def expired_executions(self, now: float) -> List[JobExecution]:
        """IN_PROGRESS executions whose in-progress or step deadline is at or before ``now``."""
        rows = self._query(
            f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE status = 'IN_PROGRESS' AND"
            " (in_progress_deadline <= ? OR step_deadline <= ?) ORDER BY seq",
            (now, now),
        )
        return [_execution(r) for r in rows]


def _job_row(job: Job) -> tuple:
    return (
        job.job_id,
        job.document,
        json.dumps(list(job.targets)),
        job.status.value,
        job.created_at,
        job.last_updated_at,
        job.description,
        job.completed_at,
        job.in_progress_timeout_minutes,
        json.dumps([[c.failure_type.value, c.number_of_retries] for c in job.retry_criteria]),
        int(job.force_canceled),
        job.reason_code,
        job.comment,
    )


def _job(row: tuple) -> Job:
    return Job(
        job_id=row[0],
        document=row[1],
        targets=tuple(json.loads(row[2])),
        status=JobStatus(row[3]),
        created_at=row[4],
        last_updated_at=row[5],
        description=row[6],
        completed_at=row[7],
        in_progress_timeout_minutes=row[8],
        retry_criteria=tuple(
            RetryCriterion(RetryFailureType(t), int(n)) for t, n in json.loads(row[9])
        ),
        force_canceled=bool(row[10]),
        reason_code=row[11],
        comment=row[12],
    )


def _execution_row(execution: JobExecution) -> tuple:
    return (
        execution.job_id,
        execution.thing_name,
        execution.execution_number,
        execution.status.value,
        execution.version_number,
        execution.queued_at,
        execution.last_updated_at,
        execution.started_at,
        json.dumps(dict(execution.status_details)),
        int(execution.force_canceled),
        execution.retry_attempt,
        execution.in_progress_deadline,
        execution.step_deadline,
    )


def _execution(row: tuple) -> JobExecution:
    return JobExecution(
        job_id=row[0],
        thing_name=row[1],
        execution_number=row[2],
        status=ExecutionStatus(row[3]),
        version_number=row[4],
        queued_at=row[5],
        last_updated_at=row[6],
        started_at=row[7],
        status_details=json.loads(row[8]),
        force_canceled=bool(row[9]),
        retry_attempt=row[10],
        in_progress_deadline=row[11],
        step_deadline=row[12],
    )
