"""The rollout and abort rules (local_jobs/rollouts.py) as tables, and a database made before
fleet features opened by the new store (columns added, state kept)."""

from __future__ import annotations

import sqlite3

import pytest

from local_jobs.model import AbortCriterion, ExecutionStatus, RolloutConfig
from local_jobs.rollouts import abort_criterion, after_release, quota, starting_state
from local_jobs.store import Store

S = ExecutionStatus


def test_constant_rate_allows_the_maximum_per_window_and_opens_a_new_window_each_minute():
    config = RolloutConfig(maximum_per_minute=5)
    state = starting_state(config, now=100.0)
    allowed, state = quota(state, now=100.0, minute=60.0)
    assert allowed == 5
    state = after_release(config, state, released=5, notified=5, succeeded=0)
    assert quota(state, now=159.0, minute=60.0)[0] == 0
    assert quota(state, now=160.0, minute=60.0)[0] == 5


@pytest.mark.parametrize(
    "notified, succeeded, criteria, expected_rate",
    [
        (2, 0, {"notified_things": 2}, 4),  # 2 notified since the start: 2 * 2.0
        (1, 0, {"notified_things": 2}, 2),  # not yet
        (3, 3, {"succeeded_things": 3}, 4),
        (3, 2, {"succeeded_things": 3}, 2),
    ],
)
def test_exponential_rate_grows_by_the_factor_when_its_criterion_is_met(
    notified, succeeded, criteria, expected_rate
):
    config = RolloutConfig(
        maximum_per_minute=100, base_rate_per_minute=2, increment_factor=2.0, **criteria
    )
    state = starting_state(config, now=0.0)
    state = after_release(config, state, released=2, notified=notified, succeeded=succeeded)
    assert state[0] == expected_rate


def test_exponential_rate_never_passes_the_maximum_and_grows_at_least_by_one():
    config = RolloutConfig(5, base_rate_per_minute=4, increment_factor=1.1, notified_things=1)
    state = after_release(config, starting_state(config, 0.0), 4, notified=4, succeeded=0)
    assert state[0] == 5
    state = after_release(config, state, 1, notified=9, succeeded=0)
    assert state[0] == 5


@pytest.mark.parametrize(
    "counts, criterion, aborted",
    [
        ({S.FAILED: 1, S.SUCCEEDED: 1}, AbortCriterion("FAILED", 50, 2), True),
        ({S.FAILED: 1, S.SUCCEEDED: 2}, AbortCriterion("FAILED", 50, 2), False),
        ({S.FAILED: 1}, AbortCriterion("FAILED", 50, 2), False),  # too few executed
        ({S.REJECTED: 1, S.TIMED_OUT: 1, S.SUCCEEDED: 2}, AbortCriterion("ALL", 50, 4), True),
        ({S.REJECTED: 2, S.SUCCEEDED: 2}, AbortCriterion("FAILED", 10, 1), False),
        ({S.QUEUED: 5, S.IN_PROGRESS: 5, S.FAILED: 1}, AbortCriterion("FAILED", 100, 1), True),
        ({S.CANCELED: 3, S.FAILED: 1}, AbortCriterion("FAILED", 100, 2), False),
    ],
)
def test_abort_counts_failures_of_the_type_among_things_whose_execution_ended(
    counts, criterion, aborted
):
    assert (abort_criterion([criterion], counts) is criterion) is aborted


OLD_SCHEMA = """
CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL UNIQUE,
    document TEXT NOT NULL, targets TEXT NOT NULL, status TEXT NOT NULL,
    created_at REAL NOT NULL, last_updated_at REAL NOT NULL, description TEXT,
    completed_at REAL, in_progress_timeout_minutes INTEGER,
    retry_criteria TEXT NOT NULL DEFAULT '[]', force_canceled INTEGER NOT NULL DEFAULT 0,
    reason_code TEXT, comment TEXT);
CREATE TABLE executions (seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL,
    thing_name TEXT NOT NULL, execution_number INTEGER NOT NULL, status TEXT NOT NULL,
    version_number INTEGER NOT NULL, queued_at REAL NOT NULL, last_updated_at REAL NOT NULL,
    started_at REAL, status_details TEXT NOT NULL DEFAULT '{}',
    force_canceled INTEGER NOT NULL DEFAULT 0, retry_attempt INTEGER NOT NULL DEFAULT 0,
    in_progress_deadline REAL, step_deadline REAL,
    UNIQUE (job_id, thing_name, execution_number));
INSERT INTO jobs (job_id, document, targets, status, created_at, last_updated_at)
    VALUES ('old', '{}', '["t1"]', 'IN_PROGRESS', 1, 1);
INSERT INTO executions (job_id, thing_name, execution_number, status, version_number,
    queued_at, last_updated_at) VALUES ('old', 't1', 1, 'QUEUED', 1, 1, 1);
"""


def test_a_database_from_before_fleet_features_opens_with_its_jobs(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    store = Store(path)
    try:
        job = store.get_job("old")
        assert (job.targets, job.target_groups, job.namespace_id) == (("t1",), (), None)
        assert [e.job_id for e in store.pending_executions("t1")] == ["old"]
    finally:
        store.close()


def test_an_increased_rate_applies_from_the_next_minute():
    config = RolloutConfig(100, base_rate_per_minute=1, increment_factor=2.0, notified_things=1)
    state = after_release(config, starting_state(config, 0.0), 1, notified=1, succeeded=0)
    assert quota(state, now=30.0, minute=60.0)[0] == 0
    assert quota(state, now=60.0, minute=60.0)[0] == 2
