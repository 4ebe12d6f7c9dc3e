"""StatusReporter: the state directory's status file and systemd's STATUS= line follow what
the agent does, and ``jobs_agent.py status`` reads them back (pure: no agent runs here)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent.activity import STATUS_FILE, WRITE_INTERVAL_SECONDS, StatusReporter, status_line
from agent.errors import SettingsError
from agent.journal import JobRecord, Journal, JournalState, Phase
from agent.status import format_status, lock_holder, read_status

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Notifier:
    """Records the STATUS= lines, as agent/systemd_notify.py's SystemdNotifier would send."""

    def __init__(self) -> None:
        self.lines = []

    def status(self, text: str) -> None:
        self.lines.append(text)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def notifier():
    return Notifier()


@pytest.fixture
def reporter(tmp_path, clock, notifier):
    return StatusReporter(tmp_path, notifier, clock=clock)


def on_disk(folder: Path) -> dict:
    return json.loads((folder / STATUS_FILE).read_text())


def test_connecting_says_since_when_and_the_last_error(reporter, clock, notifier):
    reporter.connecting()
    clock.now += 5
    reporter.connecting("TimeoutError: timed out")
    assert notifier.lines[-1] == (
        "connecting since 2027-01-15 08:00:00 UTC (last error: TimeoutError: timed out)"
    )


def test_connected_and_idle_says_since_when(reporter, clock, notifier):
    reporter.connecting("refused")
    clock.now += 3
    reporter.connected()
    assert notifier.lines[-1] == (
        "idle, listening for jobs (connected since 2027-01-15 08:00:03 UTC)"
    )


def test_a_running_job_shows_its_phase(reporter, notifier):
    reporter.connected()
    reporter.job_started("job-7", 1)
    reporter.job_phase("job-7", "downloading")
    assert notifier.lines[-1] == "running job job-7 (phase downloading)"


def test_offline_counts_the_seconds(reporter, clock, notifier):
    reporter.connected()
    reporter.offline()
    clock.now += 42
    reporter.observe(False)
    assert notifier.lines[-1] == "offline for 42 s"


def test_a_job_running_offline_says_both(reporter, clock, notifier):
    reporter.connected()
    reporter.job_started("job-7", 1)
    reporter.job_phase("job-7", "installing")
    reporter.offline()
    clock.now += 12
    reporter.observe(False)
    assert notifier.lines[-1] == "running job job-7 (phase installing); offline for 12 s"


def test_handing_over_names_the_job_and_why(reporter, notifier):
    reporter.connected()
    reporter.job_started("reboot-1", 1)
    reporter.job_handed_over("reboot-1", "waiting for the reboot")
    assert notifier.lines[-1] == (
        "handing over job reboot-1 to the next start: waiting for the reboot"
    )


def test_the_status_line_is_sent_only_when_it_changes(reporter, notifier):
    reporter.connected()
    reporter.job_started("job-7", 1)
    for _ in range(3):
        reporter.job_phase("job-7", "downloading")
    assert notifier.lines.count("running job job-7 (phase downloading)") == 1


def test_a_finished_job_goes_to_recent_newest_first(reporter, tmp_path):
    reporter.connected()
    for job_id, status in (("a", "SUCCEEDED"), ("b", "FAILED")):
        reporter.job_started(job_id, 1)
        reporter.job_finished(job_id, status, "dpkg failed" if status == "FAILED" else None)
    reporter.flush()
    saved = on_disk(tmp_path)
    assert saved["job"] is None
    assert [(e["jobId"], e["status"]) for e in saved["recent"]] == [
        ("b", "FAILED"),
        ("a", "SUCCEEDED"),
    ]
    assert saved["line"].startswith("idle, listening for jobs")


def test_the_file_is_replaced_whole_and_no_temporary_file_stays(reporter, tmp_path):
    reporter.connected()
    reporter.job_started("job-7", 1)
    reporter.flush()
    assert on_disk(tmp_path)["job"]["jobId"] == "job-7"
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATUS_FILE]


def test_recent_jobs_survive_a_restart(tmp_path, clock):
    first = StatusReporter(tmp_path, clock=clock)
    first.job_started("a", 1)
    first.job_finished("a", "SUCCEEDED")
    first.stopped()
    second = StatusReporter(tmp_path, clock=clock)
    second.connecting()
    second.flush()
    assert [e["jobId"] for e in on_disk(tmp_path)["recent"]] == ["a"]


def test_an_unwritable_state_directory_never_raises(tmp_path, notifier):
    reporter = StatusReporter(tmp_path / "absent", notifier)
    reporter.connected()
    assert reporter.flush()  # the failed write is logged, and counts as done
    assert notifier.lines[-1].startswith("idle")


def test_the_file_is_written_by_the_reporters_own_thread_and_ends_at_the_latest_state(
    reporter, tmp_path
):
    reporter.connected()
    for number in range(50):
        reporter.job_started(f"job-{number}", 1)
        reporter.job_finished(f"job-{number}", "SUCCEEDED")
    assert reporter.flush()
    saved = on_disk(tmp_path)
    assert saved["job"] is None
    assert saved["recent"][0]["jobId"] == "job-49"
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATUS_FILE]


def test_a_burst_of_changes_is_written_a_few_times_not_once_per_change(
    reporter, tmp_path, monkeypatch
):
    writes = []
    write = reporter._write
    monkeypatch.setattr(reporter, "_write", lambda data: (writes.append(data), write(data)))
    reporter.connected()
    time.sleep(0.05)  # the first write, at once
    started = time.monotonic()
    for number in range(200):
        reporter.job_started(f"job-{number}", 1)
        reporter.job_finished(f"job-{number}", "SUCCEEDED")
        time.sleep(0.001)
    elapsed = time.monotonic() - started
    assert len(writes) <= 2 + elapsed / WRITE_INTERVAL_SECONDS  # 400 changes
    assert reporter.flush(timeout=WRITE_INTERVAL_SECONDS / 2)  # flush does not wait it out
    assert on_disk(tmp_path)["recent"][0]["jobId"] == "job-199"


def test_a_connection_change_is_written_at_once_even_during_a_burst(reporter, tmp_path):
    reporter.connected()
    reporter.flush()
    reporter.job_started("job-1", 1)
    reporter.job_finished("job-1", "SUCCEEDED")
    reporter.offline()
    deadline = time.monotonic() + WRITE_INTERVAL_SECONDS / 2
    while on_disk(tmp_path).get("connection") != "offline":
        assert time.monotonic() < deadline, on_disk(tmp_path)
        time.sleep(0.005)


def test_a_change_after_a_quiet_spell_is_written_within_the_interval(reporter, tmp_path):
    reporter.connected()
    reporter.flush()
    reporter.job_started("job-1", 1)
    time.sleep(WRITE_INTERVAL_SECONDS + 0.3)
    assert on_disk(tmp_path)["job"]["jobId"] == "job-1"


@pytest.mark.parametrize(
    ("status", "line"),
    [
        ({"state": "stopped", "since": T0}, "stopped at 2027-01-15 08:00:00 UTC"),
        ({"stopping": True}, "stopping"),
        ({"stopping": True, "job": {"jobId": "j"}}, "stopping, finishing job j"),
        (
            {"connection": "connecting", "offlineSince": T0},
            "connecting since 2027-01-15 08:00:00 UTC",
        ),
        ({"job": {"jobId": "j"}}, "running job j (phase starting)"),
    ],
)
def test_status_line_table(status, line):
    assert status_line(status, T0 + 60) == line


# reading it back: jobs_agent.py status


def test_status_reads_recent_statuses_and_the_journaled_job(tmp_path, clock):
    reporter = StatusReporter(tmp_path, clock=clock)
    reporter.connected()
    reporter.job_started("old", 1)
    reporter.job_finished("old", "REJECTED", "unknown jobType 'X'")
    reporter.job_started("now", 2)
    reporter.job_phase("now", "installing")
    reporter.flush()
    Journal(tmp_path).save(
        JournalState(
            current=JobRecord("now", 1, 3, Phase.RUNNING, attempt=2), finished=(("old", 1),)
        )
    )
    report = read_status(tmp_path, where="settings.conf: [agent] state_dir", now=clock.now)
    assert report["running"] is False  # no process holds agent.lock
    assert report["current_job"]["jobId"] == "now"
    assert report["current_job"]["phase"] == "installing"
    assert report["recent"] == [
        {
            "jobId": "old",
            "status": "REJECTED",
            "reason": "unknown jobType 'X'",
            "finished": report["recent"][0]["finished"],
        }
    ]
    text = format_status(report)
    assert "agent: not running" in text
    assert "current job: now (installing, attempt 2)" in text
    assert "old: REJECTED" in text


def test_status_names_jobs_the_journal_remembers_without_a_status_file(tmp_path):
    Journal(tmp_path).save(JournalState(finished=(("first", 1), ("second", 1))))
    report = read_status(tmp_path, where="x", now=time.time())
    assert [e["jobId"] for e in report["recent"]] == ["second", "first"]
    assert report["current_job"] is None


def test_status_of_a_missing_state_directory_is_a_settings_error(tmp_path):
    with pytest.raises(SettingsError, match=r"^s.conf: \[agent\] state_dir: .* does not exist"):
        read_status(tmp_path / "absent", where="s.conf: [agent] state_dir")


def test_the_lock_holder_is_read_from_the_kernel_table(tmp_path):
    import fcntl
    import os

    path = tmp_path / "agent.lock"
    with open(path, "wb") as lock:
        assert lock_holder(path) is None
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert lock_holder(path) == os.getpid()


def test_the_same_phase_reported_again_writes_nothing(reporter, tmp_path):
    reporter.connected()
    reporter.job_started("job-7", 1)
    reporter.job_phase("job-7", "downloading")
    reporter.flush()
    (tmp_path / STATUS_FILE).unlink()
    reporter.job_phase("job-7", "downloading")
    reporter.flush()
    assert not (tmp_path / STATUS_FILE).exists()


def test_status_of_a_state_directory_that_is_a_file_says_so(tmp_path):
    (tmp_path / "state").write_text("")
    with pytest.raises(SettingsError, match=r"state_dir: .* is not a folder$"):
        read_status(tmp_path / "state", where="s.conf: [agent] state_dir")
