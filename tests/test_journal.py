"""The journal survives a cut at any point of a write and never crashes the agent on load."""

import logging
import os
import stat
import zlib

import pytest

from agent.journal import (
    LOG_RESERVED_BYTES,
    MAX_FINISHED,
    JobRecord,
    Journal,
    JournalState,
    Phase,
    _apply_log_line,
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


# The log: each save after the first is one appended line, made durable with one fdatasync.

DONE_1 = JournalState(finished=(("job-1", 3),))


def _saves(journal, states):
    for state in states:
        journal.save(state)


def _log_lines(journal) -> bytes:
    """The log's lines, without the reserved space after them (NULs)."""
    return journal.log_path.read_bytes().rstrip(b"\0")


def test_a_new_log_reserves_its_space_and_lines_fill_it_in_place(journal):
    journal.load()
    journal.save(JournalState(current=RUNNING))
    assert not journal.log_path.exists()  # the first save is a snapshot
    journal.save(JournalState(current=FINAL))
    assert journal.log_path.stat().st_size == LOG_RESERVED_BYTES
    first = _log_lines(journal)
    journal.save(DONE_1)
    assert journal.log_path.stat().st_size == LOG_RESERVED_BYTES
    assert _log_lines(journal).startswith(first) and _log_lines(journal).count(b"\n") == 2
    assert Journal(journal.directory).load() == DONE_1


def test_lines_beyond_the_reserved_space_grow_the_log(journal, monkeypatch):
    monkeypatch.setattr("agent.journal.LOG_RESERVED_BYTES", 100)
    journal.load()
    _saves(journal, [JournalState(current=RUNNING), JournalState(current=FINAL), DONE_1])
    assert journal.log_path.stat().st_size > 100
    assert Journal(journal.directory).load() == DONE_1


def test_every_save_after_the_first_appends_one_line_to_the_log(journal):
    journal.load()
    _saves(journal, [JournalState(current=RUNNING), JournalState(current=FINAL), DONE_1])
    assert _log_lines(journal).count(b"\n") == 2
    assert Journal(journal.directory).load() == DONE_1


def test_a_long_history_loads_back_the_last_state(journal):
    journal.load()
    state = JournalState()
    for number in range(MAX_FINISHED + 30):
        state = state.with_current(JobRecord("job", number, 1, Phase.RUNNING, attempt=1))
        journal.save(state)
        state = state.finish("job", number)
        journal.save(state)
    again = Journal(journal.directory)
    assert again.load() == state
    assert again.trusted


def test_the_log_starts_anew_after_max_records(journal, monkeypatch):
    monkeypatch.setattr("agent.journal.MAX_LOG_RECORDS", 3)
    journal.load()
    states = [JournalState(current=JobRecord("j", n, 1, Phase.RUNNING, 1)) for n in range(6)]
    _saves(journal, states)
    # snapshot, 3 lines, snapshot, 1 line
    assert _log_lines(journal).count(b"\n") == 1
    assert Journal(journal.directory).load() == states[-1]


@pytest.mark.parametrize("reserved", [b"", b"\0" * 4096], ids=["appended", "in_reserved_space"])
def test_a_log_line_cut_at_any_byte_leaves_the_state_before_it(journal, reserved):
    journal.load()
    _saves(journal, [JournalState(current=RUNNING), JournalState(current=FINAL)])
    whole = _log_lines(journal)
    journal.save(DONE_1)
    last_line = _log_lines(journal)[len(whole):]
    assert last_line.endswith(b"\n")
    for cut in range(len(last_line)):
        journal.log_path.write_bytes(whole + last_line[:cut] + reserved)
        again = Journal(journal.directory)
        assert again.load() == JournalState(current=FINAL), cut
        assert again.trusted


def test_a_log_line_whose_first_part_never_reached_the_disk_is_ignored(journal):
    # A torn write the other way round: the line's first bytes still read as the reserved
    # space's NULs, its last ones were written.
    journal.load()
    _saves(journal, [JournalState(current=RUNNING), JournalState(current=FINAL)])
    whole = _log_lines(journal)
    journal.save(DONE_1)
    last_line = _log_lines(journal)[len(whole):]
    for lost in range(1, len(last_line)):
        torn = b"\0" * lost + last_line[lost:]
        journal.log_path.write_bytes(whole + torn + b"\0" * 4096)
        again = Journal(journal.directory)
        assert again.load() == JournalState(current=FINAL), lost
        assert again.trusted


@pytest.mark.parametrize("tail", [b"\0" * 40, b"\xff\x13garbage\r\nmore garbage"])
def test_a_log_tail_that_never_reached_the_disk_is_ignored(journal, tail):
    journal.load()
    _saves(journal, [JournalState(current=RUNNING), JournalState(current=FINAL)])
    journal.log_path.write_bytes(_log_lines(journal) + tail)
    assert Journal(journal.directory).load() == JournalState(current=FINAL)


def test_a_damaged_log_line_with_valid_lines_after_it_is_not_believed(journal, caplog):
    journal.load()
    _saves(journal, [JournalState(current=RUNNING), JournalState(current=FINAL), DONE_1])
    lines = _log_lines(journal).splitlines(keepends=True)
    damaged = lines[0].replace(b"FINAL", b"FINAK")
    assert damaged != lines[0]
    journal.log_path.write_bytes(damaged + b"".join(lines[1:]))
    again = Journal(journal.directory)
    with caplog.at_level(logging.ERROR, logger="agent.journal"):
        assert again.load() == JournalState()
    assert not again.trusted
    assert "checksum mismatch" in caplog.text
    assert again.unreadable_path.exists() and again.unreadable_log_path.exists()


def test_a_log_left_from_before_the_last_snapshot_is_skipped(journal):
    journal.load()
    _saves(journal, [JournalState(current=RUNNING), JournalState(current=FINAL)])
    stale_log = journal.log_path.read_bytes()
    restarted = Journal(journal.directory)
    restarted.load()
    restarted.save(DONE_1)  # a new snapshot; its log is gone
    # A power cut lost the old log's removal: its lines are of the older generation.
    journal.log_path.write_bytes(stale_log)
    assert Journal(journal.directory).load() == DONE_1


def test_peek_reads_the_state_without_touching_the_files(journal):
    journal.load()
    _saves(journal, [JournalState(current=RUNNING), JournalState(current=FINAL)])
    journal.directory.joinpath("journal.json.tmp").write_text("left over")
    names = sorted(p.name for p in journal.directory.iterdir())
    assert Journal(journal.directory).peek() == JournalState(current=FINAL)
    assert sorted(p.name for p in journal.directory.iterdir()) == names


def test_log_records_are_checked_like_snapshots():
    with pytest.raises(ValueError):
        _apply_log_line(b'00000000 {"g":1}\n', 1, JournalState())
    text = b'{"current":{"jobId":5},"g":1}'
    line = b"%08x %s\n" % (zlib.crc32(text), text)
    with pytest.raises(ValueError, match="jobId: expected str"):
        _apply_log_line(line, 1, JournalState())
