"""Conformance of the local Jobs service with AWSIoTPythonSDK's AWSIoTMQTTThingJobsClient."""

from __future__ import annotations

import pytest
from AWSIoTPythonSDK.core.jobs.thingJobManager import jobExecutionStatus as status
from AWSIoTPythonSDK.core.jobs.thingJobManager import jobExecutionTopicType as kind
from local_jobs_fixtures import DOCUMENT, SdkDevice, create_job

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sdk(stack):
    device = SdkDevice(stack, "thing-1")
    yield device
    device.close()


def test_sdk_runs_a_job_from_notify_next_to_succeeded(stack, sdk):
    create_job(stack, "job-1")
    note = sdk.wait_topic("notify-next")
    assert note["execution"]["jobId"] == "job-1"
    assert note["execution"]["jobDocument"] == DOCUMENT
    assert note["execution"]["status"] == "QUEUED"
    assert note["execution"]["versionNumber"] == 1

    sdk.jobs.sendJobsStartNext(statusDetails={"step": "start"}, stepTimeoutInMinutes=5)
    started = sdk.wait_topic("start-next/accepted")
    execution = started["execution"]
    assert execution["status"] == "IN_PROGRESS"
    assert execution["versionNumber"] == 2
    assert execution["statusDetails"] == {"step": "start"}
    assert execution["jobDocument"] == DOCUMENT
    assert started["clientToken"] == "sdk-token"
    assert isinstance(started["timestamp"], int) and started["timestamp"] < 10**10

    sdk.jobs.sendJobsUpdate(
        "job-1",
        status.JOB_EXECUTION_SUCCEEDED,
        statusDetails={"result": "ok"},
        expectedVersion=execution["versionNumber"],
        executionNumber=execution["executionNumber"],
        includeJobExecutionState=True,
    )
    done = sdk.wait_topic("job-1/update/accepted")
    assert done["executionState"] == {
        "status": "SUCCEEDED",
        "statusDetails": {"result": "ok"},
        "versionNumber": 3,
    }
    assert "execution" not in sdk.wait_topic("notify-next")
    described = stack.iot_client().describe_job_execution(jobId="job-1", thingName="thing-1")
    assert described["execution"]["status"] == "SUCCEEDED"


def test_sdk_get_pending_lists_in_progress_then_queued(stack, sdk):
    create_job(stack, "job-a")
    create_job(stack, "job-b")
    sdk.jobs.sendJobsStartNext()
    sdk.wait_topic("start-next/accepted")
    sdk.jobs.sendJobsQuery(kind.JOB_GET_PENDING_TOPIC)
    pending = sdk.wait_topic("get/accepted")
    assert [j["jobId"] for j in pending["inProgressJobs"]] == ["job-a"]
    assert [j["jobId"] for j in pending["queuedJobs"]] == ["job-b"]
    assert "status" not in pending["inProgressJobs"][0]
    assert pending["clientToken"] == "sdk-token"


def test_sdk_describe_next_without_pending_jobs_has_no_execution(stack, sdk):
    sdk.jobs.sendJobsDescribe("$next")
    reply = sdk.wait_topic("$next/get/accepted")
    assert "execution" not in reply
    assert set(reply) == {"timestamp", "clientToken"}


def test_sdk_update_with_stale_version_is_rejected_with_execution_state(stack, sdk):
    create_job(stack, "job-v")
    sdk.jobs.sendJobsStartNext()
    sdk.wait_topic("start-next/accepted")
    sdk.jobs.sendJobsUpdate("job-v", status.JOB_EXECUTION_SUCCEEDED, expectedVersion=1)
    rejected = sdk.wait_topic("job-v/update/rejected")
    assert rejected["code"] == "VersionMismatch"
    assert rejected["executionState"]["versionNumber"] == 2
    assert rejected["executionState"]["status"] == "IN_PROGRESS"
    assert rejected["clientToken"] == "sdk-token"


def test_sdk_sees_notify_but_no_notify_next_for_a_job_queued_behind(stack, sdk):
    create_job(stack, "job-a")
    sdk.jobs.sendJobsStartNext()
    sdk.wait_topic("start-next/accepted")
    sdk.drain()
    create_job(stack, "job-b")
    note = sdk.wait_topic("notify")
    assert [j["jobId"] for j in note["jobs"]["QUEUED"]] == ["job-b"]
    assert "notify-next" not in [t for t, _ in sdk.drain(0.5)]


def test_sdk_describe_by_job_id_and_execution_number(stack, sdk):
    create_job(stack, "job-d")
    sdk.jobs.sendJobsDescribe("job-d", executionNumber=1, includeJobDocument=False)
    reply = sdk.wait_topic("job-d/get/accepted")
    assert reply["execution"]["executionNumber"] == 1
    assert "jobDocument" not in reply["execution"]


def test_sdk_update_of_a_canceled_execution_is_rejected_invalid_state_transition(stack, sdk):
    create_job(stack, "job-c")
    sdk.jobs.sendJobsStartNext()
    sdk.wait_topic("start-next/accepted")
    stack.iot_client().cancel_job(jobId="job-c", force=True)
    sdk.jobs.sendJobsUpdate("job-c", status.JOB_EXECUTION_SUCCEEDED, executionNumber=1)
    rejected = sdk.wait_topic("job-c/update/rejected")
    assert rejected["code"] == "InvalidStateTransition"
    assert rejected["executionState"]["status"] == "CANCELED"
