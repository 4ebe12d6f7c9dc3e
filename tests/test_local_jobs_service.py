"""LocalJobsService and the data plane's request handling in-process: a real SQLite store, a
recording publisher and a hand-driven clock (the end-to-end behaviour is in
test_local_jobs_mqtt.py and test_local_jobs_sdk.py)."""

from __future__ import annotations

import json

import pytest

from local_jobs.data_plane import handle_request
from local_jobs.model import (
    ExecutionStatus,
    InvalidRequestError,
    InvalidStateTransitionError,
    JobStatus,
    ResourceAlreadyExistsError,
    ResourceNotFoundError,
    RetryCriterion,
    RetryFailureType,
    VersionConflictError,
)
from local_jobs.service import LocalJobsService
from local_jobs.store import Store

DOC = json.dumps({"jobType": "APT_UPDATE"})
T = "thing-1"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def sent():
    return []


@pytest.fixture
def service(tmp_path, clock, sent):
    store = Store(tmp_path / "jobs.sqlite3")
    svc = LocalJobsService(
        store, lambda topic, body: sent.append((topic, body)), clock=clock, run_timers=False
    )
    yield svc
    svc.close()
    store.close()


def request(service, suffix, body=None, thing=T, raw=None):
    payload = raw if raw is not None else json.dumps(body or {}).encode()
    with service.operation():
        (reply,) = handle_request(service, f"$aws/things/{thing}/jobs/{suffix}", payload)
    return reply[0].split("/jobs/", 1)[1], reply[1]


def notes(sent):
    out = [(t.rsplit("/", 1)[1], b) for t, b in sent if t.endswith(("/notify", "/notify-next"))]
    sent.clear()
    return out


# creating jobs


def test_duplicate_job_id_is_refused_with_the_aws_message(service):
    service.create_job("job-1", [T], DOC)
    with pytest.raises(ResourceAlreadyExistsError, match="^Job job-1 already exists.$"):
        service.create_job("job-1", [T], DOC)


@pytest.mark.parametrize(
    ("job_id", "targets", "document"),
    [
        ("bad id", [T], DOC),
        ("x" * 65, [T], DOC),
        ("job", [], DOC),
        ("job", ["bad/thing"], DOC),
        ("job", [T], "[1]"),
        ("job", [T], "{not json"),
        ("job", [T], json.dumps({"pad": "x" * 32768})),
    ],
    ids=["id-space", "id-long", "no-targets", "bad-thing", "not-object", "not-json", "too-big"],
)
def test_invalid_create_job_requests_are_refused(service, job_id, targets, document):
    with pytest.raises(InvalidRequestError):
        service.create_job(job_id, targets, document)


def test_in_progress_timeout_must_be_within_limits(service):
    with pytest.raises(InvalidRequestError):
        service.create_job("job-1", [T], DOC, in_progress_timeout_minutes=10081)


# notifications


def test_two_jobs_then_finishing_both_publish_the_documented_notifications(service, sent):
    service.create_job("job-1", [T], DOC)
    assert [k for k, _ in notes(sent)] == ["notify", "notify-next"]
    service.start_next(T)
    assert notes(sent) == []
    service.create_job("job-2", [T], DOC)
    assert [k for k, _ in notes(sent)] == ["notify"]
    service.update_execution(T, "job-1", ExecutionStatus.SUCCEEDED)
    kinds = notes(sent)
    assert [k for k, _ in kinds] == ["notify", "notify-next"]
    assert kinds[1][1]["execution"]["jobId"] == "job-2"
    service.update_execution(T, "job-2", ExecutionStatus.REJECTED)
    kinds = notes(sent)
    assert kinds[0][1]["jobs"] == {}
    assert "execution" not in kinds[1][1]


def test_notifications_go_only_to_the_targeted_things(service, sent):
    service.create_job("job-1", ["thing-a"], DOC)
    assert {t.split("/")[2] for t, _ in sent} == {"thing-a"}


def test_notify_lists_at_most_ten_executions(service, sent):
    for n in range(12):
        service.create_job(f"job-{n}", [T], DOC)
    last_notify = [b for k, b in notes(sent) if k == "notify"][-1]
    assert len(last_notify["jobs"]["QUEUED"]) == 10


# state machine


def test_versions_count_device_updates_only(service, clock):
    service.create_job("job-1", [T], DOC)
    execution, _ = service.start_next(T)
    assert execution.version_number == 2
    execution, _ = service.update_execution(T, "job-1", ExecutionStatus.IN_PROGRESS)
    assert execution.version_number == 3
    clock.now += 10
    execution, _ = service.update_execution(
        T, "job-1", ExecutionStatus.SUCCEEDED, expected_version=3
    )
    assert execution.version_number == 4
    assert execution.last_updated_at == clock.now


def test_job_completes_when_every_execution_is_terminal(service):
    service.create_job("job-1", ["a", "b"], DOC)
    service.update_execution("a", "job-1", ExecutionStatus.SUCCEEDED)
    assert service.describe_job("job-1").status is JobStatus.IN_PROGRESS
    service.update_execution("b", "job-1", ExecutionStatus.FAILED)
    job = service.describe_job("job-1")
    assert job.status is JobStatus.COMPLETED and job.completed_at is not None
    counts = service.job_process_counts("job-1")
    assert counts[ExecutionStatus.SUCCEEDED] == 1 and counts[ExecutionStatus.FAILED] == 1


def test_cancel_job_of_a_completed_job_is_refused(service):
    service.create_job("job-1", [T], DOC)
    service.update_execution(T, "job-1", ExecutionStatus.SUCCEEDED)
    with pytest.raises(InvalidRequestError):
        service.cancel_job("job-1")


def test_delete_job_with_an_in_progress_execution_needs_force(service):
    service.create_job("job-1", [T], DOC)
    service.start_next(T)
    with pytest.raises(InvalidStateTransitionError):
        service.delete_job("job-1")
    service.delete_job("job-1", force=True)
    with pytest.raises(ResourceNotFoundError):
        service.describe_job("job-1")


def test_cancel_job_execution_checks_force_and_version(service):
    service.create_job("job-1", [T], DOC)
    service.start_next(T)
    with pytest.raises(InvalidStateTransitionError):
        service.cancel_job_execution("job-1", T)
    with pytest.raises(VersionConflictError):
        service.cancel_job_execution("job-1", T, force=True, expected_version=1)
    service.cancel_job_execution("job-1", T, force=True, expected_version=2,
                                 status_details={"why": "operator"})  # fmt: skip
    execution = service.describe_job_execution("job-1", T)
    assert execution.status is ExecutionStatus.CANCELED
    assert execution.force_canceled and execution.status_details == {"why": "operator"}
    with pytest.raises(InvalidStateTransitionError):
        service.cancel_job_execution("job-1", T, force=True)


# timers and retries


def test_step_timer_fires_after_the_scaled_minutes(service, clock):
    service.create_job("job-1", [T], DOC)
    service.start_next(T, step_timeout_minutes=2)
    clock.now += 119
    assert service.expire_due() == 0
    clock.now += 2
    assert service.expire_due() == 1
    assert service.describe_job_execution("job-1", T).status is ExecutionStatus.TIMED_OUT


def test_in_progress_timer_bounds_a_later_longer_step_timer(service, clock):
    service.create_job("job-1", [T], DOC, in_progress_timeout_minutes=20)
    service.start_next(T)
    clock.now += 13 * 60
    service.update_execution(T, "job-1", ExecutionStatus.IN_PROGRESS, step_timeout_minutes=9)
    clock.now += 7 * 60 + 1  # 12:20 in the DG worked example
    assert service.expire_due() == 1


def test_retry_all_counts_failures_of_both_kinds(service, clock):
    service.create_job("job-1", [T], DOC,
                       retry_criteria=[RetryCriterion(RetryFailureType.ALL, 1)])  # fmt: skip
    service.start_next(T, step_timeout_minutes=1)
    clock.now += 61
    service.expire_due()
    second = service.describe_job_execution("job-1", T)
    assert (second.execution_number, second.status) == (2, ExecutionStatus.QUEUED)
    service.start_next(T)
    service.update_execution(T, "job-1", ExecutionStatus.FAILED)
    assert service.describe_job_execution("job-1", T).execution_number == 2
    assert service.describe_job("job-1").status is JobStatus.COMPLETED


def test_rejected_executions_are_never_retried(service):
    service.create_job("job-1", [T], DOC,
                       retry_criteria=[RetryCriterion(RetryFailureType.ALL, 3)])  # fmt: skip
    service.update_execution(T, "job-1", ExecutionStatus.REJECTED)
    assert service.get_pending(T) == []


def test_state_and_timers_survive_a_new_service_on_the_same_file(tmp_path, clock):
    store = Store(tmp_path / "jobs.sqlite3")
    first = LocalJobsService(store, clock=clock, run_timers=False)
    first.create_job("job-1", [T], DOC)
    first.start_next(T, step_timeout_minutes=1)
    first.close()
    store.close()
    store = Store(tmp_path / "jobs.sqlite3")
    second = LocalJobsService(store, clock=clock, run_timers=False)
    assert [e.job_id for e in second.get_pending(T)] == ["job-1"]
    clock.now += 61
    assert second.expire_due() == 1
    second.close()
    store.close()


# the data plane's request handling


def test_messages_on_reply_and_notification_topics_get_no_reply(service):
    for suffix in ("get/accepted", "job-1/update/rejected", "notify", "notify-next"):
        assert handle_request(service, f"$aws/things/{T}/jobs/{suffix}", b"{}") == []


def test_unknown_jobs_topic_is_rejected_invalid_topic(service):
    topic, reply = request(service, "frobnicate", {"clientToken": "t"})
    assert topic == "frobnicate/rejected"
    assert reply["code"] == "InvalidTopic" and reply["clientToken"] == "t"


def test_invalid_thing_name_in_topic_is_rejected_invalid_topic(service):
    topic, reply = request(service, "get", thing="bad.thing")
    assert reply["code"] == "InvalidTopic"


def test_unexpected_failure_is_rejected_internal_error(service, monkeypatch):
    def broken(thing_name):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(service, "get_pending", broken)
    topic, reply = request(service, "get", {"clientToken": "t"})
    assert topic == "get/rejected"
    assert reply["code"] == "InternalError" and reply["clientToken"] == "t"
    assert "disk" not in reply["message"]


def test_empty_payload_is_taken_as_an_empty_request(service):
    topic, reply = request(service, "get", raw=b"")
    assert topic == "get/accepted"


def test_describe_of_an_older_execution_by_number(service, clock):
    service.create_job("job-1", [T], DOC,
                       retry_criteria=[RetryCriterion(RetryFailureType.FAILED, 1)])  # fmt: skip
    service.update_execution(T, "job-1", ExecutionStatus.FAILED)
    topic, reply = request(service, "job-1/get", {"executionNumber": 2})
    assert reply["execution"]["executionNumber"] == 2
    topic, reply = request(service, "job-1/get", {"executionNumber": 1})
    assert reply["code"] == "TerminalStateReached"
