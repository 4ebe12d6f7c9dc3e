"""The local Jobs service over raw MQTT: every operation, every rejection code, notification
timing, cancel, timeouts, retries and restarts, against real mosquitto and the real service."""

from __future__ import annotations

import json
import time

import pytest
from local_jobs_fixtures import DOCUMENT, RawDevice, create_job

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def device(stack):
    d = RawDevice(stack, "thing-1")
    yield d
    d.close()


def execution_status(stack, job_id, thing="thing-1"):
    return stack.iot_client().describe_job_execution(jobId=job_id, thingName=thing)["execution"]


def wait_status(stack, job_id, status, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        current = execution_status(stack, job_id)["status"]
        if current == status:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is {current}, not {status}, after {timeout}s")
        time.sleep(0.05)


def topics(messages):
    return [topic for topic, _ in messages]


def start(device, **body):
    topic, reply = device.request("start-next", body)
    assert topic == "start-next/accepted", reply
    return reply["execution"]


# operations


def test_get_pending_with_no_jobs_returns_empty_lists(device):
    topic, reply = device.request("get", {"clientToken": "tok-1"})
    assert topic == "get/accepted"
    assert reply["inProgressJobs"] == [] and reply["queuedJobs"] == []
    assert reply["clientToken"] == "tok-1"
    assert abs(reply["timestamp"] - time.time()) < 5  # seconds, not milliseconds


def test_get_pending_summaries_carry_versions_and_execution_numbers(stack, device):
    create_job(stack, "job-1")
    topic, reply = device.request("get")
    (summary,) = reply["queuedJobs"]
    assert summary["jobId"] == "job-1"
    assert summary["versionNumber"] == 1 and summary["executionNumber"] == 1
    assert set(summary) == {
        "jobId", "queuedAt", "lastUpdatedAt", "versionNumber", "executionNumber"
    }  # fmt: skip


def test_start_next_without_pending_jobs_has_no_execution(device):
    topic, reply = device.request("start-next")
    assert topic == "start-next/accepted"
    assert "execution" not in reply


def test_start_next_twice_returns_the_in_progress_execution_unchanged(stack, device):
    create_job(stack, "job-1")
    first = start(device, statusDetails={"step": "one"})
    again = start(device, statusDetails={"step": "two"})
    assert again["jobId"] == "job-1"
    assert again["versionNumber"] == first["versionNumber"] == 2
    assert again["statusDetails"] == {"step": "one"}


def test_describe_job_by_id_includes_the_document_by_default(stack, device):
    create_job(stack, "job-1")
    topic, reply = device.request("job-1/get")
    assert topic == "job-1/get/accepted"
    assert reply["execution"]["jobDocument"] == DOCUMENT
    assert "thingName" not in reply["execution"]
    topic, reply = device.request("job-1/get", {"includeJobDocument": False})
    assert "jobDocument" not in reply["execution"]


def test_describe_next_returns_the_head_of_the_queue(stack, device):
    create_job(stack, "job-1")
    create_job(stack, "job-2")
    topic, reply = device.request("$next/get")
    assert topic == "$next/get/accepted"
    assert reply["execution"]["jobId"] == "job-1"


def test_update_accepted_is_minimal_unless_state_or_document_asked(stack, device):
    create_job(stack, "job-1")
    topic, reply = device.request("job-1/update", {"status": "IN_PROGRESS", "clientToken": "c"})
    assert topic == "job-1/update/accepted"
    assert set(reply) == {"timestamp", "clientToken"}
    topic, reply = device.request(
        "job-1/update",
        {
            "status": "IN_PROGRESS",
            "statusDetails": {"progress": "50%"},
            "expectedVersion": "2",  # a string, as PY1 and the DG examples send it
            "includeJobExecutionState": True,
            "includeJobDocument": True,
        },
    )
    assert reply["executionState"] == {
        "status": "IN_PROGRESS",
        "statusDetails": {"progress": "50%"},
        "versionNumber": 3,
    }
    assert reply["jobDocument"] == DOCUMENT


def test_update_accepts_expected_version_as_a_number(stack, device):
    create_job(stack, "job-1")
    topic, reply = device.request("job-1/update", {"status": "IN_PROGRESS", "expectedVersion": 1})
    assert topic == "job-1/update/accepted"


def test_update_without_status_details_keeps_them(stack, device):
    create_job(stack, "job-1")
    start(device, statusDetails={"keep": "me"})
    device.request("job-1/update", {"status": "IN_PROGRESS"})
    assert execution_status(stack, "job-1")["statusDetails"]["detailsMap"] == {"keep": "me"}


def test_status_details_values_may_hold_newlines(stack, device):
    create_job(stack, "job-1")
    topic, _ = device.request(
        "job-1/update", {"status": "FAILED", "statusDetails": {"stderr": "E: oops\n"}}
    )
    assert topic == "job-1/update/accepted"


def test_thing_name_comes_from_the_topic_not_the_payload(stack_factory):
    stack = stack_factory(things=["thing-1", "thing-2"])
    device = RawDevice(stack, "thing-1")
    try:
        create_job(stack, "job-2", things=["thing-2"])
        topic, reply = device.request("start-next", {"thingName": "thing-2"})
        assert "execution" not in reply
        assert execution_status(stack, "job-2", "thing-2")["status"] == "QUEUED"
    finally:
        device.close()


# rejections: the nine codes


def test_invalid_job_id_in_topic_is_rejected_invalid_topic(device):
    topic, reply = device.request("bad.id/get", {"clientToken": "t"})
    assert topic == "bad.id/get/rejected"
    assert reply["code"] == "InvalidTopic"
    assert reply["clientToken"] == "t"
    assert "executionState" not in reply


def test_update_on_next_is_rejected_invalid_topic(device):
    topic, reply = device.request("$next/update", {"status": "IN_PROGRESS"})
    assert reply["code"] == "InvalidTopic"


def test_payload_that_is_not_json_is_rejected_invalid_json(device):
    device.publish("get", raw=b"{not json")
    reply = device.wait_topic("get/rejected")
    assert reply["code"] == "InvalidJson"


@pytest.mark.parametrize(
    "body",
    [
        {"status": "IN_PROGRESS", "statusDetails": {"n": 5}},
        {"status": "IN_PROGRESS", "statusDetails": {"bad key": "v"}},
        {"status": "IN_PROGRESS", "statusDetails": {"k": "x" * 1025}},
        {"status": "IN_PROGRESS", "statusDetails": {"k": ""}},
        {"status": "IN_PROGRESS", "statusDetails": {"k": "bell\x07"}},
        {"status": "IN_PROGRESS", "statusDetails": "text"},
        {"status": "IN_PROGRESS", "expectedVersion": "two"},
        {"status": "IN_PROGRESS", "includeJobDocument": "yes"},
        {"status": "IN_PROGRESS", "stepTimeoutInMinutes": 0},
        {"status": "IN_PROGRESS", "stepTimeoutInMinutes": 10081},
        {"status": "DONE"},
        {},
        {"status": "IN_PROGRESS", "clientToken": 7},
    ],
    ids=[
        "number-value", "bad-key", "long-value", "empty-value", "control-char", "not-a-map",
        "version-text", "flag-text", "step-0", "step-too-long", "unknown-status", "no-status",
        "token-number",
    ],
)  # fmt: skip
def test_bad_update_fields_are_rejected_invalid_request(stack, device, body):
    create_job(stack, "job-1")
    device.publish("job-1/update", body)
    reply = device.wait_topic("job-1/update/rejected")
    assert reply["code"] == "InvalidRequest", reply
    assert "executionState" not in reply
    assert execution_status(stack, "job-1")["status"] == "QUEUED"


def test_payload_that_is_not_an_object_is_rejected_invalid_request(device):
    device.publish("get", raw=b"[1, 2]")
    assert device.wait_topic("get/rejected")["code"] == "InvalidRequest"


def test_oversize_payload_is_rejected_invalid_request(device):
    device.publish("get", raw=json.dumps({"pad": "x" * 140_000}).encode())
    assert device.wait_topic("get/rejected")["code"] == "InvalidRequest"


def test_update_after_a_terminal_status_is_rejected_invalid_state_transition(stack, device):
    create_job(stack, "job-1")
    start(device)
    device.request("job-1/update", {"status": "SUCCEEDED"})
    topic, reply = device.request("job-1/update", {"status": "IN_PROGRESS"})
    assert topic == "job-1/update/rejected"
    assert reply["code"] == "InvalidStateTransition"
    assert reply["executionState"] == {"status": "SUCCEEDED", "statusDetails": {},
                                       "versionNumber": 3}  # fmt: skip


def test_device_cannot_set_a_service_status(stack, device):
    create_job(stack, "job-1")
    topic, reply = device.request("job-1/update", {"status": "CANCELED"})
    assert reply["code"] == "InvalidStateTransition"
    assert reply["executionState"]["status"] == "QUEUED"


def test_unknown_job_is_rejected_resource_not_found(device):
    topic, reply = device.request("no-such-job/get")
    assert topic == "no-such-job/get/rejected"
    assert reply["code"] == "ResourceNotFound"
    topic, reply = device.request("no-such-job/update", {"status": "IN_PROGRESS"})
    assert reply["code"] == "ResourceNotFound"


def test_stale_expected_version_is_rejected_version_mismatch(stack, device):
    create_job(stack, "job-1")
    start(device)
    topic, reply = device.request("job-1/update", {"status": "SUCCEEDED", "expectedVersion": "1"})
    assert reply["code"] == "VersionMismatch"
    assert reply["executionState"]["versionNumber"] == 2


def test_describe_of_a_terminal_execution_is_rejected_terminal_state_reached(stack, device):
    create_job(stack, "job-1")
    device.request("job-1/update", {"status": "REJECTED"})
    topic, reply = device.request("job-1/get")
    assert reply["code"] == "TerminalStateReached"
    assert "executionState" not in reply


def test_too_many_requests_are_rejected_request_throttled(stack_factory):
    stack = stack_factory(requests_per_second=1.0)
    device = RawDevice(stack, "thing-1")
    try:
        codes = []
        for _ in range(4):
            topic, reply = device.request("get")
            codes.append(reply.get("code", "accepted"))
        assert "RequestThrottled" in codes
        assert codes[0] == "accepted"
    finally:
        device.close()


# notify and notify-next timing (jobs-api.md §1.5)


def test_new_job_on_an_idle_thing_publishes_notify_and_notify_next(stack, device):
    create_job(stack, "job-1")
    note = device.wait_topic("notify")
    assert [j["jobId"] for j in note["jobs"]["QUEUED"]] == ["job-1"]
    assert "IN_PROGRESS" not in note["jobs"]
    nxt = device.wait_topic("notify-next")
    assert nxt["execution"]["jobId"] == "job-1"


def test_starting_the_head_job_publishes_nothing(stack, device):
    create_job(stack, "job-1")
    device.wait_topic("notify-next")
    device.drain()
    start(device)
    assert not [t for t in topics(device.drain(0.5)) if t.startswith("notify")]


def test_job_queued_behind_an_in_progress_one_publishes_notify_only(stack, device):
    create_job(stack, "job-1")
    start(device)
    device.drain()
    create_job(stack, "job-2")
    note = device.wait_topic("notify")
    assert [j["jobId"] for j in note["jobs"]["IN_PROGRESS"]] == ["job-1"]
    assert [j["jobId"] for j in note["jobs"]["QUEUED"]] == ["job-2"]
    assert "notify-next" not in topics(device.drain(0.5))


def test_finishing_the_head_publishes_the_next_job_on_notify_next(stack, device):
    create_job(stack, "job-1")
    create_job(stack, "job-2")
    start(device)
    device.drain()
    device.request("job-1/update", {"status": "SUCCEEDED"})
    nxt = device.wait_topic("notify-next")
    assert nxt["execution"]["jobId"] == "job-2"
    assert nxt["execution"]["jobDocument"] == DOCUMENT
    note = device.wait_topic("notify")
    assert [j["jobId"] for j in note["jobs"]["QUEUED"]] == ["job-2"]


def test_emptied_queue_publishes_notify_next_without_execution(stack, device):
    create_job(stack, "job-1")
    start(device)
    device.drain()
    device.request("job-1/update", {"status": "FAILED"})
    assert device.wait_topic("notify") == {"timestamp": pytest.approx(time.time(), abs=5),
                                           "jobs": {}}  # fmt: skip
    nxt = device.wait_topic("notify-next")
    assert set(nxt) == {"timestamp"}


def test_reply_arrives_before_the_notifications_it_causes(stack, device):
    create_job(stack, "job-1")
    start(device)
    device.drain()
    device.publish("job-1/update", {"status": "SUCCEEDED", "clientToken": "x"})
    device.wait_topic("notify-next")
    received = [t for t in topics(device.seen) if not t.startswith("notify")]
    assert received == ["job-1/update/accepted"]


def test_starting_a_queued_job_that_is_not_the_head_publishes_notify_next(stack, device):
    create_job(stack, "job-1")
    create_job(stack, "job-2")
    device.drain()
    device.request("job-2/update", {"status": "IN_PROGRESS"})
    nxt = device.wait_topic("notify-next")
    assert nxt["execution"]["jobId"] == "job-2"
    assert nxt["execution"]["status"] == "IN_PROGRESS"
    assert "notify" not in topics(device.drain(0.5))


# cancel


def test_cancel_without_force_leaves_an_in_progress_execution_running(stack, device):
    create_job(stack, "job-1")
    start(device)
    stack.iot_client().cancel_job(jobId="job-1")
    assert execution_status(stack, "job-1")["status"] == "IN_PROGRESS"
    topic, _ = device.request("job-1/update", {"status": "SUCCEEDED"})
    assert topic == "job-1/update/accepted"


def test_cancel_without_force_cancels_queued_executions(stack, device):
    create_job(stack, "job-1")
    device.drain()
    stack.iot_client().cancel_job(jobId="job-1")
    assert execution_status(stack, "job-1")["status"] == "CANCELED"
    assert set(device.wait_topic("notify-next")) == {"timestamp"}


def test_cancel_with_force_cancels_the_running_execution_and_moves_the_head(stack, device):
    create_job(stack, "job-1")
    create_job(stack, "job-2")
    start(device)
    device.drain()
    stack.iot_client().cancel_job(jobId="job-1", force=True)
    nxt = device.wait_topic("notify-next")
    assert nxt["execution"]["jobId"] == "job-2"
    execution = execution_status(stack, "job-1")
    assert execution["status"] == "CANCELED" and execution["forceCanceled"] is True
    topic, reply = device.request("job-1/update", {"status": "SUCCEEDED"})
    assert reply["code"] == "InvalidStateTransition"
    assert reply["executionState"]["status"] == "CANCELED"


def test_delete_job_with_force_removes_the_execution(stack, device):
    create_job(stack, "job-1")
    start(device)
    device.drain()
    stack.iot_client().delete_job(jobId="job-1", force=True)
    assert set(device.wait_topic("notify-next")) == {"timestamp"}
    topic, reply = device.request("job-1/update", {"status": "SUCCEEDED"})
    assert reply["code"] == "ResourceNotFound"


# timers and retries (a service minute is one second in these tests)


def test_step_timeout_turns_the_execution_timed_out(stack, device):
    create_job(stack, "job-1")
    start(device, stepTimeoutInMinutes=1)
    device.drain()
    assert set(device.wait_topic("notify-next", timeout=10)) == {"timestamp"}
    assert execution_status(stack, "job-1")["status"] == "TIMED_OUT"
    topic, reply = device.request("job-1/update", {"status": "SUCCEEDED"})
    assert reply["code"] == "InvalidStateTransition"
    assert reply["executionState"]["status"] == "TIMED_OUT"


def test_step_timeout_of_minus_one_discards_the_step_timer(stack, device):
    create_job(stack, "job-1")
    execution = start(device, stepTimeoutInMinutes=1)
    assert "approximateSecondsBeforeTimedOut" in execution
    device.request("job-1/update", {"status": "IN_PROGRESS", "stepTimeoutInMinutes": -1})
    time.sleep(1.5)  # past the discarded one-"minute" step timer
    assert execution_status(stack, "job-1")["status"] == "IN_PROGRESS"


def test_in_progress_timeout_from_timeout_config_turns_the_execution_timed_out(stack, device):
    create_job(stack, "job-1", timeoutConfig={"inProgressTimeoutInMinutes": 1})
    start(device)
    wait_status(stack, "job-1", "TIMED_OUT")


def test_failed_execution_is_retried_with_the_next_execution_number(stack, device):
    create_job(
        stack,
        "job-1",
        jobExecutionsRetryConfig={
            "criteriaList": [{"failureType": "FAILED", "numberOfRetries": 1}]
        },
    )
    start(device)
    device.drain()
    device.request("job-1/update", {"status": "FAILED"})
    nxt = device.wait_topic("notify-next")
    assert nxt["execution"]["jobId"] == "job-1"
    assert nxt["execution"]["executionNumber"] == 2
    assert nxt["execution"]["versionNumber"] == 1
    second = start(device)
    assert second["executionNumber"] == 2
    device.request("job-1/update", {"status": "FAILED"})
    assert set(device.wait_topic("notify-next")) == {"timestamp"}  # retries used up


def test_timed_out_execution_is_retried_when_configured(stack, device):
    create_job(
        stack,
        "job-1",
        jobExecutionsRetryConfig={
            "criteriaList": [{"failureType": "TIMED_OUT", "numberOfRetries": 1}]
        },
    )
    start(device, stepTimeoutInMinutes=1)
    device.drain()
    nxt = device.wait_topic("notify-next", timeout=10)
    assert nxt["execution"]["executionNumber"] == 2
    assert nxt["execution"]["status"] == "QUEUED"


# restarts


def test_service_restart_keeps_jobs_versions_and_queue(stack, device):
    create_job(stack, "job-1")
    create_job(stack, "job-2")
    start(device)
    stack.restart_service()
    topic, reply = device.request("get")
    assert [j["jobId"] for j in reply["inProgressJobs"]] == ["job-1"]
    assert [j["jobId"] for j in reply["queuedJobs"]] == ["job-2"]
    topic, _ = device.request("job-1/update", {"status": "SUCCEEDED", "expectedVersion": 2})
    assert topic == "job-1/update/accepted"


def test_step_timer_is_rearmed_after_a_service_restart(stack, device):
    create_job(stack, "job-1")
    start(device, stepTimeoutInMinutes=2)
    stack.restart_service()
    wait_status(stack, "job-1", "TIMED_OUT")


def test_service_answers_again_after_a_broker_restart(stack, device):
    create_job(stack, "job-1")
    stack.restart_broker()
    time.sleep(0.1)  # let the device notice the broker went away
    device.wait_subscribed()
    topic, reply = device.request("$next/get")
    assert reply["execution"]["jobId"] == "job-1"
