"""SQLite storage of jobs and job executions: values in, values out, no service rules.

One connection, guarded by a lock, in WAL mode. Every write is committed before the call
returns, so a service killed at any point restarts from what its clients were told.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from local_jobs.model import (
    AbortCriterion,
    ExecutionStatus,
    Job,
    JobExecution,
    JobStatus,
    RetryCriterion,
    RetryFailureType,
    RolloutConfig,
    TargetSelection,
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
-- kept by the triggers of FLEET_SCHEMA in the same transaction as the change itself.
CREATE TABLE IF NOT EXISTS pending_changes (
    thing_name TEXT PRIMARY KEY,
    changes INTEGER NOT NULL
);
"""

# Added after the first release: columns an older database gets by ALTER TABLE, and the
# pending-set triggers, re-made so that each (thing, namespace) queue is counted apart. A
# queue's key is the thing name for the default namespace and "thing/namespace" otherwise
# (a thing name holds no "/").
_ADDED_COLUMNS = (
    ("jobs", "fleet", "TEXT NOT NULL DEFAULT '{}'"),
    ("executions", "namespace", "TEXT NOT NULL DEFAULT ''"),
)
_QUEUE_KEY = "CASE WHEN {row}.namespace = '' THEN {row}.thing_name " \
    "ELSE {row}.thing_name || '/' || {row}.namespace END"
FLEET_SCHEMA = f"""
CREATE INDEX IF NOT EXISTS executions_by_queue ON executions (thing_name, namespace, status);
DROP TRIGGER IF EXISTS pending_insert;
DROP TRIGGER IF EXISTS pending_update;
DROP TRIGGER IF EXISTS pending_delete;
CREATE TRIGGER pending_insert AFTER INSERT ON executions
WHEN NEW.status IN ('QUEUED', 'IN_PROGRESS')
BEGIN
    INSERT OR IGNORE INTO pending_changes VALUES ({_QUEUE_KEY.format(row="NEW")}, 0);
    UPDATE pending_changes SET changes = changes + 1
    WHERE thing_name = {_QUEUE_KEY.format(row="NEW")};
END;
CREATE TRIGGER pending_update AFTER UPDATE OF status ON executions
WHEN (OLD.status IN ('QUEUED', 'IN_PROGRESS')) != (NEW.status IN ('QUEUED', 'IN_PROGRESS'))
BEGIN
    INSERT OR IGNORE INTO pending_changes VALUES ({_QUEUE_KEY.format(row="NEW")}, 0);
    UPDATE pending_changes SET changes = changes + 1
    WHERE thing_name = {_QUEUE_KEY.format(row="NEW")};
END;
CREATE TRIGGER pending_delete AFTER DELETE ON executions
WHEN OLD.status IN ('QUEUED', 'IN_PROGRESS')
BEGIN
    UPDATE pending_changes SET changes = changes + 1
    WHERE thing_name = {_QUEUE_KEY.format(row="OLD")};
END;
-- Executions a rollout has not queued yet, in the order they will be.
CREATE TABLE IF NOT EXISTS planned_executions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    thing_name TEXT NOT NULL,
    UNIQUE (job_id, thing_name)
);
-- Where each rollout stands: its rate, the minute window it is in and what it counted.
CREATE TABLE IF NOT EXISTS rollouts (
    job_id TEXT PRIMARY KEY,
    rate INTEGER NOT NULL,
    window_start REAL NOT NULL,
    released_in_window INTEGER NOT NULL,
    notified_mark INTEGER NOT NULL DEFAULT 0,
    succeeded_mark INTEGER NOT NULL DEFAULT 0
);
"""

_EXECUTION_COLUMNS = (
    "job_id, thing_name, execution_number, status, version_number, queued_at, last_updated_at, "
    "started_at, status_details, force_canceled, retry_attempt, in_progress_deadline, "
    "step_deadline, namespace"
)
_JOB_COLUMNS = (
    "job_id, document, targets, status, created_at, last_updated_at, description, completed_at, "
    "in_progress_timeout_minutes, retry_criteria, force_canceled, reason_code, comment, fleet"
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
        for table, column, kind in _ADDED_COLUMNS:
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        self._db.executescript(FLEET_SCHEMA)

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

    def query(self, sql: str, args=()) -> List[tuple]:
        """Rows of one SQL query (for modules that keep their own tables: registry.py)."""
        return self._query(sql, args)

    def execute(self, sql: str, args=()) -> None:
        """Run one SQL statement (joins the current transaction, if any)."""
        self._execute(sql, args)

    def executescript(self, sql: str) -> None:
        """Run a schema script (CREATE ... IF NOT EXISTS) at start-up."""
        with self._connection_lock:
            self._db.executescript(sql)

    # jobs

    def insert_job(self, job: Job) -> None:
        self._execute(
            f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", _job_row(job)
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

    def continuous_jobs_in_progress(self) -> List[Job]:
        """IN_PROGRESS jobs whose targetSelection is CONTINUOUS, in creation order."""
        rows = self._query(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status = 'IN_PROGRESS'"
            # LIKE, not json_extract: SQLite builds without JSON1 exist (fleet is json.dumps').
            " AND fleet LIKE '%\"target_selection\": \"CONTINUOUS\"%' ORDER BY seq"
        )
        return [_job(r) for r in rows]

    def delete_job(self, job_id: str) -> None:
        with self.transaction():
            self._execute("DELETE FROM executions WHERE job_id = ?", (job_id,))
            self._execute("DELETE FROM planned_executions WHERE job_id = ?", (job_id,))
            self._execute("DELETE FROM rollouts WHERE job_id = ?", (job_id,))
            self._execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    def delete_execution(self, job_id: str, thing_name: str, execution_number: int) -> None:
        self._execute(
            "DELETE FROM executions WHERE job_id = ? AND thing_name = ? AND execution_number = ?",
            (job_id, thing_name, execution_number),
        )

    # rollouts

    def plan_executions(self, job_id: str, thing_names: List[str]) -> None:
        """Keep executions a rollout queues later, in this order."""
        with self._connection_lock:
            self._db.executemany(
                "INSERT OR IGNORE INTO planned_executions (job_id, thing_name) VALUES (?, ?)",
                [(job_id, name) for name in thing_names],
            )

    def planned_things(self, job_id: str, limit: int = -1) -> List[str]:
        rows = self._query(
            "SELECT thing_name FROM planned_executions WHERE job_id = ? ORDER BY seq LIMIT ?",
            (job_id, limit),
        )
        return [row[0] for row in rows]

    def planned_count(self, job_id: str) -> int:
        return self._query(
            "SELECT COUNT(*) FROM planned_executions WHERE job_id = ?", (job_id,)
        )[0][0]

    def unplan(self, job_id: str, thing_names: Optional[List[str]] = None) -> None:
        """Forget planned executions: these, or all of the job's."""
        if thing_names is None:
            self._execute("DELETE FROM planned_executions WHERE job_id = ?", (job_id,))
            return
        with self._connection_lock:
            self._db.executemany(
                "DELETE FROM planned_executions WHERE job_id = ? AND thing_name = ?",
                [(job_id, name) for name in thing_names],
            )

    def rolling_jobs(self) -> List[str]:
        """Jobs with planned executions left."""
        return [r[0] for r in self._query("SELECT DISTINCT job_id FROM planned_executions")]

    def get_rollout(self, job_id: str) -> Optional[Tuple[int, float, int, int, int]]:
        """(rate, window_start, released_in_window, notified_mark, succeeded_mark), or None."""
        rows = self._query(
            "SELECT rate, window_start, released_in_window, notified_mark, succeeded_mark"
            " FROM rollouts WHERE job_id = ?",
            (job_id,),
        )
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    def put_rollout(self, job_id: str, state: Tuple[int, float, int, int, int]) -> None:
        self._execute("INSERT OR REPLACE INTO rollouts VALUES (?, ?, ?, ?, ?, ?)", (job_id, *state))

    # executions

    def insert_execution(self, execution: JobExecution) -> None:
        self._execute(
            f"INSERT INTO executions ({_EXECUTION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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

    def has_pending_executions(self, job_id: str) -> bool:
        """True while an execution of the job is QUEUED or IN_PROGRESS."""
        return bool(
            self._query(
                "SELECT 1 FROM executions WHERE job_id = ? AND status IN (?, ?) LIMIT 1",
                (job_id, *_PENDING),
            )
        )

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
        self, thing_name: str, limit: Optional[int] = None, namespace: str = ""
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
                f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE thing_name = ?"
                " AND namespace = ? AND status = ? ORDER BY seq LIMIT ?",
                (thing_name, namespace, status, wanted),
            )
            found.extend(_execution(r) for r in rows)
        return found

    def pending_shape(self, thing_name: str, namespace: str = "") -> Tuple[int, Optional[int]]:
        """How often the thing's pending set has changed, and the row id of its head (or None).

        Both come from indexes, whatever the queue's length: what the service compares before
        and after a change to decide on ``notify`` and ``notify-next``. An execution enters
        the pending set only when inserted and leaves it for good (a terminal status is
        final), so the set differs exactly when the count of changes does.
        """
        key = f"{thing_name}/{namespace}" if namespace else thing_name
        with self._connection_lock:
            rows = self._db.execute(
                "SELECT changes FROM pending_changes WHERE thing_name = ?", (key,)
            ).fetchall()
            changes = rows[0][0] if rows else 0
            for status in _PENDING_ORDER:
                rows = self._db.execute(
                    "SELECT seq FROM executions WHERE thing_name = ? AND namespace = ?"
                    " AND status = ? ORDER BY seq LIMIT 1",
                    (thing_name, namespace, status),
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
        json.dumps(_fleet_fields(job)),
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
        **_fleet_values(json.loads(row[13] or "{}")),
    )


def _fleet_fields(job: Job) -> dict:
    """The job fields kept in the ``fleet`` JSON column (groups, selection, namespace, ...)."""
    return {
        "target_groups": list(job.target_groups),
        "target_selection": job.target_selection.value,
        "namespace_id": job.namespace_id,
        "rollout": dataclasses.asdict(job.rollout) if job.rollout else None,
        "abort_criteria": [dataclasses.asdict(c) for c in job.abort_criteria],
    }


def _fleet_values(fields: dict) -> dict:
    return {
        "target_groups": tuple(fields.get("target_groups", ())),
        "target_selection": TargetSelection(fields.get("target_selection", "SNAPSHOT")),
        "namespace_id": fields.get("namespace_id"),
        "rollout": RolloutConfig(**fields["rollout"]) if fields.get("rollout") else None,
        "abort_criteria": tuple(AbortCriterion(**c) for c in fields.get("abort_criteria", ())),
    }


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
        execution.namespace,
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
        namespace=row[13],
    )
