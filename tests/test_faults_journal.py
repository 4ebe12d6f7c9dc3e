"""Power cuts against the journal: a write cut at any byte, a tail of zeros or garbage where
the data never reached the disk, a half-written temporary file. Loading never raises and never
lies: it gives back exactly what was saved, or an empty, untrusted state (the bad file kept
aside); and the agent started on such a journal reports nothing it cannot prove.
"""

from __future__ import annotations

import random

import pytest
from agent_core_fixtures import InProcessAgent, Recorder, create_job, wait_status
from local_jobs_fixtures import RawDevice

from agent.journal import JobRecord, Journal, JournalState, Phase, state_to_json

pytest_plugins = ("resilience_fixtures",)

STATES = {
    "empty": JournalState(),
    "running": JournalState(
        current=JobRecord("job-ü-1", 7, 3, Phase.RUNNING, attempt=2),
        finished=(("old-1", 1), ("old-2", 4)),
    ),
    "final": JournalState(
        current=JobRecord(
            "job-2",
            1,
            12,
            Phase.FINAL,
            attempt=1,
            status="FAILED",
            status_details={"reason": 'dpkg said "no"\nline two', "errorCode": "INSTALL_FAILED"},
        ),
        finished=tuple((f"done-{n}", n) for n in range(20)),
    ),
    "claimed": JournalState(current=JobRecord("job-3", 2, 1, Phase.CLAIMED)),
}


def _load(directory):
    journal = Journal(directory)
    state = journal.load()
    return journal, state


def _check_exact_or_distrusted(journal, state, saved, damaged_text):
    """The one promise: the saved state exactly (trusted), or nothing (untrusted, set aside)."""
    if journal.trusted:
        assert state == saved
    else:
        assert state == JournalState()
        assert not journal.path.exists()
        assert journal.unreadable_path.read_bytes() == damaged_text


@pytest.mark.parametrize("name", sorted(STATES))
def test_a_journal_cut_at_any_byte_loads_exactly_or_not_at_all(tmp_path, name):
    saved = STATES[name]
    text = state_to_json(saved).encode("utf-8")
    trusted_lengths = []
    for offset in range(len(text) + 1):
        directory = tmp_path / str(offset)
        directory.mkdir()
        (directory / Journal.FILE_NAME).write_bytes(text[:offset])
        journal, state = _load(directory)
        _check_exact_or_distrusted(journal, state, saved, text[:offset])
        if journal.trusted:
            trusted_lengths.append(offset)
    # Only the whole text, or the whole text without its final newline, is believed.
    assert trusted_lengths == [len(text) - 1, len(text)]


@pytest.mark.parametrize("name", sorted(STATES))
@pytest.mark.parametrize("filler", ["zeros", "garbage"])
def test_a_journal_whose_tail_never_reached_the_disk_loads_exactly_or_not_at_all(
    tmp_path, name, filler
):
    saved = STATES[name]
    text = state_to_json(saved).encode("utf-8")
    generator = random.Random(len(text))
    for offset in range(len(text)):
        tail_length = len(text) - offset
        if filler == "zeros":
            tail = b"\0" * tail_length
        else:
            tail = bytes(generator.randrange(256) for _ in range(tail_length))
        directory = tmp_path / str(offset)
        directory.mkdir()
        (directory / Journal.FILE_NAME).write_bytes(text[:offset] + tail)
        journal, state = _load(directory)
        _check_exact_or_distrusted(journal, state, saved, text[:offset] + tail)


@pytest.mark.parametrize("name", sorted(STATES))
def test_a_half_written_new_journal_leaves_the_old_one_in_force(tmp_path, name):
    old = STATES["running"] if name != "running" else STATES["final"]
    new_text = state_to_json(STATES[name]).encode("utf-8")
    for offset in range(len(new_text) + 1):
        directory = tmp_path / str(offset)
        Journal(directory).save(old)
        (directory / (Journal.FILE_NAME + ".tmp")).write_bytes(new_text[:offset])
        journal, state = _load(directory)
        assert journal.trusted
        assert state == old
        assert not (directory / (Journal.FILE_NAME + ".tmp")).exists()


def test_a_first_write_cut_before_the_rename_loads_as_no_journal(tmp_path):
    text = state_to_json(STATES["final"]).encode("utf-8")
    (tmp_path / (Journal.FILE_NAME + ".tmp")).write_bytes(text[: len(text) // 2])
    journal, state = _load(tmp_path)
    assert state == JournalState()
    assert not journal.trusted


# The agent on a damaged journal: the service shows the execution IN_PROGRESS and the journal
# had recorded a final SUCCEEDED not yet delivered. Cut, the journal cannot be believed: the
# agent must not claim SUCCEEDED (it cannot prove it) nor run a handler that is not safe to
# re-run; it reports the execution FAILED as interrupted. Whole, it delivers SUCCEEDED.
FINAL_SUCCEEDED = JobRecord(
    "cut-1", 1, 2, Phase.FINAL, attempt=1, status="SUCCEEDED", status_details={"ran": "yes"}
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cut", ["whole", "empty", "one-byte", "half", "all-but-two-bytes"])
def test_the_agent_starts_on_a_cut_journal_and_reports_only_what_it_can_prove(stack, agents, cut):
    create_job(stack, "cut-1", {"jobType": "ONCE"})
    device = RawDevice(stack, "thing-1")
    try:  # the execution is claimed, as the agent did before the power cut
        topic, reply = device.request("start-next")
        assert topic == "start-next/accepted" and reply["execution"]["jobId"] == "cut-1"
    finally:
        device.close()
    recorder = Recorder()
    agent = InProcessAgent(stack).add("ONCE", recorder.quick, safe_to_rerun=False)
    agents.append(agent)
    text = state_to_json(JournalState(current=FINAL_SUCCEEDED)).encode("utf-8")
    keep = {
        "whole": len(text),
        "empty": 0,
        "one-byte": 1,
        "half": len(text) // 2,
        "all-but-two-bytes": len(text) - 2,
    }[cut]
    agent.journal.directory.mkdir(parents=True, exist_ok=True)
    agent.journal.path.write_bytes(text[:keep])
    agent.start()
    done = wait_status(stack, "cut-1", timeout=20)
    if cut == "whole":
        assert done["status"] == "SUCCEEDED"
        assert done["details"] == {"ran": "yes"}
    else:
        assert done["status"] == "FAILED"
        assert done["details"]["errorCode"] == "INTERRUPTED"
        assert agent.journal.unreadable_path.read_bytes() == text[:keep]
    assert recorder.calls == []
