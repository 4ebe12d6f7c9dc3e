"""The journal survives a cut at any point of a write and never crashes the agent on load."""

import logging
import os
import stat

import pytest

from agent.journal import (
    MAX_FINISHED,
    JobRecord,
    Journal,
    JournalState,
    Phase,
    state_from_json,
    state_to_json,
)

RUNNING = JobRecord("job-1", 3, 2, Phase.RUNNING, attempt=1)
FINAL = JobRecord(
    "job-1", 3, 5, Phase.FINAL, attempt=2, status="FAILED", status_details={"reason": "x\ny"}
)


@pytest.fixture
def journal(tmp_path):
    return Journal(tmp_path)


@pytest.mark.parametrize(
    "state",
    [
        JournalState(),
        JournalState(current=RUNNING),
        JournalState(current=FINAL, finished=(("old", 1), ("older", 7))),
        JournalState(current=JobRecord("j", 1, 1, Phase.CLAIMED)),
        JournalState(current=JobRecord("j", 1, 4, Phase.HANDED_OVER, attempt=1)),
    ],
    ids=["empty", "running", "final_with_finished", "claimed", "handed_over"],
)
def test_saved_state_loads_back_equal(journal, state):
    journal.save(state)
    assert journal.load() == state


def test_missing_journal_is_empty(journal):
    assert journal.load() == JournalState()


def test_journal_file_is_private(journal):
    journal.save(JournalState(current=RUNNING))
    assert stat.S_IMODE(os.stat(journal.path).st_mode) == 0o600


def test_save_leaves_no_temporary_file(journal):
    journal.save(JournalState(current=RUNNING))
    assert sorted(p.name for p in journal.directory.iterdir()) == ["journal.json"]


def test_write_cut_at_any_point_keeps_the_previous_state(journal):
    old = JournalState(current=RUNNING)
    new_text = state_to_json(JournalState(current=FINAL)).encode()
    for cut in range(len(new_text) + 1):
        journal.save(old)
        # A crash during save: the temporary file holds a prefix, the rename never happened.
        journal.directory.joinpath("journal.json.tmp").write_bytes(new_text[:cut])
        assert journal.load() == old, cut
        assert not journal.directory.joinpath("journal.json.tmp").exists()


def test_truncated_journal_at_any_point_loads_without_raising(journal, caplog):
    text = state_to_json(JournalState(current=FINAL, finished=(("a", 1),))).encode()
    for cut in range(len(text)):
        journal.path.write_bytes(text[:cut])
        with caplog.at_level(logging.ERROR, logger="agent.journal"):
            state = journal.load()
        assert state in (JournalState(), JournalState(current=FINAL, finished=(("a", 1),)))


def test_unreadable_journal_is_logged_and_kept_aside(journal, caplog):
    journal.path.write_text('{"format": 1, "current": {"jobId": 5}}')
    with caplog.at_level(logging.ERROR, logger="agent.journal"):
        assert journal.load() == JournalState()
    assert "jobId: expected str, got 5" in caplog.text
    assert journal.unreadable_path.read_text().startswith('{"format": 1')
    assert not journal.path.exists()


def test_binary_garbage_is_treated_as_unreadable(journal):
    journal.path.write_bytes(b"\xff\xfe\x00garbage")
    assert journal.load() == JournalState()
    assert journal.unreadable_path.exists()


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"format": 2}',
        '{"format": 1, "current": "x"}',
        '{"format": 1, "current": {"jobId": "j", "executionNumber": true, '
        '"versionNumber": 1, "phase": "RUNNING", "attempt": 1}}',
        '{"format": 1, "current": {"jobId": "j", "executionNumber": 1, '
        '"versionNumber": 1, "phase": "LOST", "attempt": 1}}',
        '{"format": 1, "current": {"jobId": "j", "executionNumber": 1, '
        '"versionNumber": 1, "phase": "FINAL", "attempt": 1}}',
        '{"format": 1, "finished": [["j"]]}',
        '{"format": 1, "current": {"jobId": "j", "executionNumber": 1, "versionNumber": 1, '
        '"phase": "RUNNING", "attempt": 1, "statusDetails": {"a": 1}}}',
    ],
    ids=[
        "not_an_object",
        "unknown_format",
        "current_not_object",
        "boolean_number",
        "unknown_phase",
        "final_without_status",
        "bad_finished_pair",
        "non_string_details",
    ],
)
def test_malformed_content_is_rejected_by_the_parser(text):
    with pytest.raises(ValueError):
        state_from_json(text)


def test_finish_clears_the_current_job_and_remembers_it():
    state = JournalState(current=RUNNING).finish("job-1", 3)
    assert state.current is None
    assert state.has_finished("job-1", 3)
    assert not state.has_finished("job-1", 4)


def test_finished_list_is_bounded_and_keeps_the_newest():
    state = JournalState()
    for number in range(MAX_FINISHED + 5):
        state = state.finish("job", number)
    assert len(state.finished) == MAX_FINISHED
    assert state.has_finished("job", MAX_FINISHED + 4)
    assert not state.has_finished("job", 0)


def test_finishing_twice_keeps_one_entry():
    state = JournalState().finish("a", 1).finish("b", 1).finish("a", 1)
    assert state.finished == (("b", 1), ("a", 1))
