"""The HTTPS device API (iot-jobs-data) end to end: boto3's own client with the thing's
certificate against the local service, the same state machine and MQTT notifications."""

from __future__ import annotations

import json
import ssl
import urllib.request

import boto3
import pytest
from botocore.exceptions import ClientError, SSLError
from local_jobs_fixtures import RawDevice, create_job

DOCUMENT = {"jobType": "APT_UPDATE", "aptPackageName": "cowsay"}


@pytest.fixture
def stack(stack_factory):
    return stack_factory(things=("thing-1", "thing-2"))


@pytest.fixture
def jobs(stack):
    return stack.jobs_data_client("thing-1")


def error_of(call, **kwargs):
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    return caught.value.response["Error"]["Code"], caught.value.response["Error"]["Message"]


def test_a_job_runs_to_succeeded_over_https_with_mqtt_notifications(stack, jobs):
    device = RawDevice(stack, "thing-1")
    try:
        assert jobs.get_pending_job_executions(thingName="thing-1")["queuedJobs"] == []
        create_job(stack, "j1", document=DOCUMENT)
        device.wait_topic("notify-next")
        pending = jobs.get_pending_job_executions(thingName="thing-1")
        assert [j["jobId"] for j in pending["queuedJobs"]] == ["j1"]
        next_one = jobs.describe_job_execution(thingName="thing-1", jobId="$next")["execution"]
        assert next_one["status"] == "QUEUED"
        assert json.loads(next_one["jobDocument"]) == DOCUMENT
        started = jobs.start_next_pending_job_execution(
            thingName="thing-1", statusDetails={"by": "https"}, stepTimeoutInMinutes=10
        )["execution"]
        assert (started["jobId"], started["status"], started["versionNumber"]) == (
            "j1", "IN_PROGRESS", 2)
        assert started["statusDetails"] == {"by": "https"}
        device.drain()
        updated = jobs.update_job_execution(
            thingName="thing-1", jobId="j1", status="SUCCEEDED", expectedVersion=2,
            statusDetails={"result": "ok"}, includeJobExecutionState=True,
            includeJobDocument=True,
        )
        assert updated["executionState"]["status"] == "SUCCEEDED"
        assert json.loads(updated["jobDocument"]) == DOCUMENT
        assert device.wait_topic("notify")["jobs"] == {}
        assert "execution" not in device.wait_topic("notify-next")
    finally:
        device.close()
    execution = stack.iot_client().describe_job_execution(jobId="j1", thingName="thing-1")
    assert execution["execution"]["status"] == "SUCCEEDED"


def test_device_errors_come_with_aws_codes_over_https(stack, jobs):
    create_job(stack, "j2", document=DOCUMENT)
    jobs.start_next_pending_job_execution(thingName="thing-1")
    assert error_of(jobs.update_job_execution, thingName="thing-1", jobId="j2",
                    status="SUCCEEDED", expectedVersion=7)[0] == "VersionConflictException"
    code, message = error_of(jobs.update_job_execution, thingName="thing-1", jobId="j2",
                             status="IN_PROGRESS", stepTimeoutInMinutes=0)
    assert code == "InvalidRequestException" and "stepTimeoutInMinutes must be" in message
    assert error_of(jobs.describe_job_execution, thingName="thing-1", jobId="nope")[0] == (
        "ResourceNotFoundException")
    jobs.update_job_execution(thingName="thing-1", jobId="j2", status="FAILED")
    assert error_of(jobs.update_job_execution, thingName="thing-1", jobId="j2",
                    status="SUCCEEDED")[0] == "InvalidStateTransitionException"
    assert error_of(jobs.describe_job_execution, thingName="thing-1", jobId="j2")[0] == (
        "TerminalStateException")


def test_a_thing_may_act_only_for_itself(stack, jobs):
    code, message = error_of(jobs.get_pending_job_executions, thingName="thing-2")
    assert code == "ForbiddenException"
    assert "thing thing-1's; it may not act for thing thing-2" in message


def test_a_client_without_a_certificate_is_refused(stack):
    anonymous = boto3.client(
        "iot-jobs-data", endpoint_url=stack.jobs_data_url, region_name="us-east-1",
        aws_access_key_id="x", aws_secret_access_key="x", verify=str(stack.ca_path),
    )
    with pytest.raises((SSLError, ClientError, ConnectionError, OSError)):
        anonymous.get_pending_job_executions(thingName="thing-1")
    assert stack.jobs_data_client("thing-1").get_pending_job_executions(
        thingName="thing-1")["inProgressJobs"] == []


def test_an_unknown_route_names_the_served_operations(stack):
    creds = stack.thing("thing-1")
    context = ssl.create_default_context(cafile=str(stack.ca_path))
    context.load_cert_chain(str(creds.certificate), str(creds.private_key))
    request = urllib.request.Request(stack.jobs_data_url + "/things/thing-1/jobs/j/x")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, context=context, timeout=10)
    assert caught.value.headers["x-amzn-ErrorType"] == "UnknownOperationException"
    assert "GetPendingJobExecutions" in json.loads(caught.value.read())["message"]


def test_endpoints_name_the_https_device_api(stack):
    assert stack.endpoints()["jobs_data_url"] == stack.jobs_data_url
    assert stack.jobs_data_url.startswith("https://localhost:")


def test_the_device_client_pointed_at_the_control_plane_is_told_where_to_go(stack):
    wrong = boto3.client(
        "iot-jobs-data", endpoint_url=stack.control_url, region_name="us-east-1",
        aws_access_key_id="x", aws_secret_access_key="x",
    )
    code, message = error_of(wrong.get_pending_job_executions, thingName="thing-1")
    assert code == "UnknownOperationException"
    assert "jobs_data_url" in message
