"""Crash recovery as a table (agent/recovery.py): what the job client does with a claimed
execution, from what start-next handed back, what the journal says and the handler's rerun
policy. One row per branch; the end-to-end tests show the same through a real restart."""

from __future__ import annotations

import pytest

from agent.dispatch import Registration
from agent.job import Outcome, Status
from agent.journal import JobRecord, Journal, JournalState, Phase
from agent.recovery import Action, Claim, Ledger, decide

RUN_ID = "this-run"
JOB = ("job-1", 1)
MAX_ATTEMPTS = 3


def registration(safe_to_rerun):
    return Registration(lambda d: None, None, lambda d, j: {}, safe_to_rerun, "X")


SAFE, UNSAFE = registration(True), registration(False)
NO_HANDLER = Outcome.rejected("unknown jobType 'X'", "NO_HANDLER")


def record(phase, attempt=1, **kwargs):
    return JobRecord(*JOB, 3, phase, attempt, **kwargs)


FINAL = record(Phase.FINAL, status="SUCCEEDED", status_details={"done": "yes"})
FINISHED = JournalState(finished=(JOB,))

# (what start-next says claimed it, journal state, journal trusted, dispatch, stopping)
# -> (action, attempt, interrupted, errorCode of the final status or None)
ROWS = {
    "already finished here: not run twice": (
        "other-run", FINISHED, True, SAFE, False, Action.REPORT, 0, False, "DUPLICATE"),
    "final status in the journal: delivered": (
        "other-run", JournalState(FINAL), True, SAFE, False, Action.DELIVER, 1, False, None),
    "interrupted, safe to rerun: run again": (
        "other-run", JournalState(record(Phase.RUNNING)), True, SAFE, False,
        Action.RUN, 2, True, None),
    "interrupted, not safe to rerun: FAILED": (
        "other-run", JournalState(record(Phase.RUNNING)), True, UNSAFE, False,
        Action.REPORT, 2, True, "INTERRUPTED"),
    "interrupted max_attempts times: FAILED giving up": (
        "other-run", JournalState(record(Phase.RUNNING, 3)), True, SAFE, False,
        Action.REPORT, 4, True, "INTERRUPTED"),
    "handed over, even unsafe: continue": (
        "other-run", JournalState(record(Phase.HANDED_OVER)), True, UNSAFE, False,
        Action.RUN, 2, False, None),
    "handed over max_attempts times: FAILED giving up": (
        "other-run", JournalState(record(Phase.HANDED_OVER, 3)), True, UNSAFE, False,
        Action.REPORT, 4, False, "INTERRUPTED"),
    "claimed by an earlier run that never started it: first run": (
        "other-run", JournalState(record(Phase.CLAIMED, 0)), False, UNSAFE, False,
        Action.RUN, 1, False, None),
    "claimed by this run: first run": (
        RUN_ID, JournalState(), False, UNSAFE, False, Action.RUN, 1, False, None),
    "unknown to a trusted journal: first run": (
        "other-run", JournalState(), True, UNSAFE, False, Action.RUN, 1, False, None),
    "unknown to an untrusted journal, safe: run as interrupted": (
        "other-run", JournalState(), False, SAFE, False, Action.RUN, 2, True, None),
    "unknown to an untrusted journal, unsafe: FAILED interrupted": (
        None, JournalState(), False, UNSAFE, False, Action.REPORT, 2, True, "INTERRUPTED"),
    "the document is refused: its final status": (
        RUN_ID, JournalState(), True, NO_HANDLER, False, Action.REPORT, 1, False, "NO_HANDLER"),
    "claimed while stopping: left for the next start": (
        RUN_ID, JournalState(), True, SAFE, True, Action.LEAVE, 1, False, None),
    "interrupted, claimed while stopping: left, still interrupted": (
        "other-run", JournalState(record(Phase.RUNNING)), True, SAFE, True,
        Action.LEAVE, 2, True, None),
    "final status in the journal while stopping: delivered": (
        "other-run", JournalState(FINAL), True, SAFE, True, Action.DELIVER, 1, False, None),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=list(ROWS))
def test_recovery_decision(row):
    claimed_by, state, trusted, dispatch, stopping, action, attempt, interrupted, code = row
    decision = decide(
        Claim(*JOB, claimed_by), state, RUN_ID, trusted, lambda resumed: dispatch, MAX_ATTEMPTS,
        stopping,
    )
    assert (decision.action, decision.attempt, decision.interrupted) == (
        action,
        attempt,
        interrupted,
    )
    details = decision.outcome.details if decision.outcome is not None else {}
    assert details.get("errorCode") == code
    if action is Action.RUN:
        assert decision.registration is dispatch


@pytest.mark.parametrize(
    "claimed_by, state, trusted, resumed",
    [
        ("other-run", JournalState(record(Phase.RUNNING)), True, True),
        ("other-run", JournalState(record(Phase.HANDED_OVER)), True, True),
        ("other-run", JournalState(record(Phase.CLAIMED, 0)), False, False),
        (RUN_ID, JournalState(), False, False),
        ("other-run", JournalState(), False, False),  # attempt 2, but no handler ran here
    ],
    ids=["interrupted", "handed-over", "claimed-earlier", "claimed-now", "unknown-untrusted"],
)
def test_dispatch_is_told_resumed_only_when_the_journal_shows_a_handler_ran(
    claimed_by, state, trusted, resumed
):
    told = []
    decide(
        Claim(*JOB, claimed_by), state, RUN_ID, trusted, lambda r: told.append(r) or SAFE,
        MAX_ATTEMPTS,
    )
    assert told == [resumed]


def test_delivered_final_status_is_the_journals():
    decision = decide(Claim(*JOB), JournalState(FINAL), RUN_ID, True, None, MAX_ATTEMPTS)
    assert decision.record == FINAL


def test_giving_up_says_how_often_the_job_was_interrupted():
    state = JournalState(record(Phase.RUNNING, 3))
    decision = decide(Claim(*JOB), state, RUN_ID, True, lambda resumed: SAFE, MAX_ATTEMPTS)
    assert decision.outcome == Outcome(
        Status.FAILED,
        {"reason": "interrupted by agent restart 3 times; giving up", "errorCode": "INTERRUPTED"},
    )


@pytest.mark.parametrize(
    "state, stopping",
    [(FINISHED, False), (JournalState(FINAL), False), (JournalState(), True)],
    ids=["duplicate", "final", "stopping"],
)
def test_the_document_is_not_looked_at_when_the_handler_does_not_matter(state, stopping):
    def dispatch(resumed):
        raise AssertionError("dispatch called")

    decide(Claim(*JOB, RUN_ID), state, RUN_ID, True, dispatch, MAX_ATTEMPTS, stopping)


def test_a_record_of_another_execution_is_a_caller_error():
    state = JournalState(JobRecord("job-2", 1, 1, Phase.RUNNING, 1))
    with pytest.raises(ValueError):
        decide(Claim(*JOB), state, RUN_ID, True, lambda resumed: SAFE, MAX_ATTEMPTS)


# Ledger: the one place the journal is written


def test_ledger_writes_records_and_keeps_finished_executions_until_flushed(tmp_path):
    ledger = Ledger(Journal(tmp_path))
    ledger.open()
    ledger.record(record(Phase.RUNNING))
    ledger.finish(*JOB)
    assert Journal(tmp_path).load().current == record(Phase.RUNNING)
    ledger.flush()
    assert Journal(tmp_path).load() == JournalState(finished=(JOB,))


def test_ledger_open_reports_whether_the_journal_can_be_trusted(tmp_path):
    first = Ledger(Journal(tmp_path))
    first.open()
    assert not first.trusted
    second = Ledger(Journal(tmp_path))
    second.open()
    assert second.trusted


def test_ledger_strict_write_error_raises_and_keeps_the_state(tmp_path):
    folder = tmp_path / "state"
    ledger = Ledger(Journal(folder))
    ledger.open()
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    folder.write_text("a file where the state folder was")
    with pytest.raises(OSError):
        ledger.record(record(Phase.RUNNING), strict=True)
    assert ledger.current is None
    ledger.record(record(Phase.RUNNING))  # not strict: logged, kept in memory
    assert ledger.current == record(Phase.RUNNING)
