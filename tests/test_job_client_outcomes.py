"""How handler results and errors become final statuses and statusDetails (pure logic)."""

import pytest

from agent.errors import JobFailed, JobRejected
from job_client import Outcome, Status, failure_details, outcome_of_error


def test_reason_and_error_code_come_first_so_they_survive_the_pair_limit():
    extra = {f"k{i}": "v" for i in range(12)}
    details = failure_details("it broke", "BROKEN", extra)
    assert list(details)[:2] == ["reason", "errorCode"]
    assert len(details) == 10


def test_extra_details_cannot_overwrite_the_reason():
    details = failure_details("real reason", None, {"reason": "fake", "stderr": "tail"})
    assert details == {"reason": "real reason", "stderr": "tail"}


@pytest.mark.parametrize(
    ("error", "status", "details"),
    [
        (
            JobFailed("no space", "DISK_FULL"),
            Status.FAILED,
            {"reason": "no space", "errorCode": "DISK_FULL"},
        ),
        (JobRejected("not allowed"), Status.REJECTED, {"reason": "not allowed"}),
        (
            JobFailed("dpkg failed", "DPKG", {"exitCode": 100}),
            Status.FAILED,
            {"reason": "dpkg failed", "errorCode": "DPKG", "exitCode": "100"},
        ),
    ],
    ids=["failed_with_code", "rejected_without_code", "failed_with_details"],
)
def test_handler_errors_map_to_their_status(error, status, details):
    assert outcome_of_error(error) == Outcome(status, details)


def test_long_reason_keeps_its_tail():
    details = failure_details("x" * 2000 + " root cause", "E")
    assert details["reason"].endswith(" root cause")
    assert len(details["reason"]) == 1024
