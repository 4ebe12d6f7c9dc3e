"""The control plane as a fleet, end to end with boto3 and the AWS CLI against the real local
service: thing registry, thing groups and CONTINUOUS jobs, AssociateTargetsWithJob, UpdateJob,
DeleteJobExecution, DeleteJob's force rule, tags, paging and DescribeEndpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator

import pytest
from botocore.exceptions import ClientError

from local_jobs.model import thing_arn, thing_group_arn
from local_jobs.stack import LocalStack
from tests.local_jobs_fixtures import RawDevice

AWS = str(Path(sys.executable).with_name("aws"))
THINGS = ["thing-1", "thing-2", "thing-3"]
DOCUMENT = json.dumps({"jobType": "TEST"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("stack"), things=THINGS) as stack:
        yield stack


@pytest.fixture(scope="module")
def iot(stack):
    return stack.iot_client()


@pytest.fixture
def name() -> str:
    """A fresh name for a job, thing or group of one test."""
    return "t-" + uuid.uuid4().hex[:10]


def error_of(call, *args, **kwargs) -> Dict[str, str]:
    with pytest.raises(ClientError) as caught:
        call(*args, **kwargs)
    return caught.value.response["Error"]


def aws_cli(stack, tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_PAGER="",
        HOME=str(tmp_path),
    )
    command = [AWS, "iot", *args, "--endpoint-url", stack.control_url, "--output", "json"]
    return subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )


def make_group(iot, name: str, things) -> None:
    """A thing group ``name`` holding ``things``."""
    iot.create_thing_group(thingGroupName=name)
    for thing in things:
        iot.add_thing_to_thing_group(thingGroupName=name, thingName=thing)


def statuses(iot, job_id: str) -> Dict[str, str]:
    summaries = iot.list_job_executions_for_job(jobId=job_id)["executionSummaries"]
    return {s["thingArn"].rsplit("/", 1)[1]: s["jobExecutionSummary"]["status"] for s in summaries}


# --------------------------------------------------------------------------- things


def test_create_describe_list_and_delete_a_thing(iot, name):
    made = iot.create_thing(thingName=name, attributePayload={"attributes": {"site": "lab"}})
    assert made["thingArn"] == thing_arn(name)
    described = iot.describe_thing(thingName=name)
    assert (described["thingArn"], described["attributes"], described["version"]) == (
        thing_arn(name),
        {"site": "lab"},
        1,
    )
    assert described["thingId"] == made["thingId"]
    listed = iot.list_things(attributeName="site", attributeValue="lab")["things"]
    assert [t["thingName"] for t in listed] == [name]
    iot.delete_thing(thingName=name)
    assert error_of(iot.describe_thing, thingName=name)["Code"] == "ResourceNotFoundException"
    iot.delete_thing(thingName=name)  # AWS: deleting a thing that does not exist succeeds


def test_create_thing_again_with_other_attributes_already_exists(iot, name):
    iot.create_thing(thingName=name)
    assert iot.create_thing(thingName=name)["thingName"] == name
    error = error_of(iot.create_thing, thingName=name, attributePayload={"attributes": {"a": "b"}})
    assert error["Code"] == "ResourceAlreadyExistsException"


def test_the_stacks_things_are_registered_and_the_cli_gets_the_arn(stack, tmp_path):
    result = aws_cli(
        stack, tmp_path, "describe-thing", "--thing-name", "thing-2", "--query", "thingArn"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == thing_arn("thing-2")
    listed = json.loads(aws_cli(stack, tmp_path, "list-things").stdout)["things"]
    assert {"thing-1", "thing-2", "thing-3"} <= {t["thingName"] for t in listed}


def test_a_thing_with_a_certificate_cannot_be_deleted(iot):
    error = error_of(iot.delete_thing, thingName="thing-1")
    assert error["Code"] == "InvalidRequestException"
    assert "still attached to one or more principals" in error["Message"]


def test_create_job_for_a_thing_that_does_not_exist_is_resource_not_found(iot, name):
    error = error_of(
        iot.create_job, jobId=name, targets=[thing_arn("nosuchthing")], document=DOCUMENT
    )
    assert error["Code"] == "ResourceNotFoundException"
    assert "thing nosuchthing does not exist" in error["Message"]
    assert error_of(iot.describe_job, jobId=name)["Code"] == "ResourceNotFoundException"


def test_bad_thing_input_names_the_field(iot):
    error = error_of(
        iot.create_thing, thingName="ok", attributePayload={"attributes": {"bad key!": "v"}}
    )
    assert error["Code"] == "InvalidRequestException"
    assert "attribute name 'bad key!'" in error["Message"]
    error = error_of(iot.create_thing, thingName="x", thingTypeName="sensor")
    assert error["Code"] == "ResourceNotFoundException"
    assert "thingTypeName" in error["Message"]


# --------------------------------------------------------------------------- thing groups


def test_thing_group_lifecycle_and_membership(iot, name):
    child = name + "-child"
    made = iot.create_thing_group(
        thingGroupName=name, thingGroupProperties={"thingGroupDescription": "the fleet"}
    )
    assert made["thingGroupArn"] == thing_group_arn(name)
    iot.create_thing_group(thingGroupName=child, parentGroupName=name)
    described = iot.describe_thing_group(thingGroupName=child)
    assert described["thingGroupMetadata"]["parentGroupName"] == name
    assert described["thingGroupMetadata"]["rootToParentThingGroups"] == [
        {"groupName": name, "groupArn": thing_group_arn(name)}
    ]
    assert (
        iot.describe_thing_group(thingGroupName=name)["thingGroupProperties"][
            "thingGroupDescription"
        ]
        == "the fleet"
    )
    iot.add_thing_to_thing_group(thingGroupName=name, thingName="thing-1")
    iot.add_thing_to_thing_group(
        thingGroupArn=thing_group_arn(child), thingArn=thing_arn("thing-2")
    )
    assert iot.list_things_in_thing_group(thingGroupName=name)["things"] == ["thing-1"]
    assert iot.list_things_in_thing_group(thingGroupName=name, recursive=True)["things"] == [
        "thing-1",
        "thing-2",
    ]
    groups = iot.list_thing_groups(parentGroup=name)["thingGroups"]
    assert groups == [{"groupName": child, "groupArn": thing_group_arn(child)}]
    error = error_of(iot.delete_thing_group, thingGroupName=name)
    assert error["Code"] == "InvalidRequestException" and "child groups" in error["Message"]
    iot.remove_thing_from_thing_group(thingGroupName=child, thingName="thing-2")
    assert iot.list_things_in_thing_group(thingGroupName=child)["things"] == []
    iot.delete_thing_group(thingGroupName=child)
    iot.delete_thing_group(thingGroupName=name)
    error = error_of(iot.describe_thing_group, thingGroupName=name)
    assert error["Code"] == "ResourceNotFoundException"


def test_adding_to_a_group_that_does_not_exist_is_resource_not_found(iot, name):
    error = error_of(iot.add_thing_to_thing_group, thingGroupName=name, thingName="thing-1")
    assert error["Code"] == "ResourceNotFoundException"


def test_snapshot_job_on_a_group_queues_its_members_and_is_listed_by_group(iot, name):
    make_group(iot, name, ["thing-1", "thing-3"])
    iot.create_job(jobId=name, targets=[thing_group_arn(name)], document=DOCUMENT)
    assert statuses(iot, name) == {"thing-1": "QUEUED", "thing-3": "QUEUED"}
    job = iot.describe_job(jobId=name)["job"]
    assert (job["targets"], job["targetSelection"]) == ([thing_group_arn(name)], "SNAPSHOT")
    listed = iot.list_jobs(thingGroupName=name)["jobs"]
    assert [j["jobId"] for j in listed] == [name]
    group_id = iot.describe_thing_group(thingGroupName=name)["thingGroupId"]
    assert [j["jobId"] for j in iot.list_jobs(thingGroupId=group_id)["jobs"]] == [name]
    error = error_of(iot.list_jobs, thingGroupName=name + "-none")
    assert error["Code"] == "ResourceNotFoundException"
    iot.add_thing_to_thing_group(thingGroupName=name, thingName="thing-2")
    assert "thing-2" not in statuses(iot, name)  # a snapshot does not follow the group
    iot.cancel_job(jobId=name)


def test_continuous_job_reaches_a_thing_added_to_its_group_later(stack, iot, name):
    iot.create_thing_group(thingGroupName=name)
    iot.create_job(
        jobId=name,
        targets=[thing_group_arn(name)],
        document=DOCUMENT,
        targetSelection="CONTINUOUS",
    )
    assert statuses(iot, name) == {}
    device = RawDevice(stack, "thing-3")
    try:
        iot.add_thing_to_thing_group(thingGroupName=name, thingName="thing-3")
        assert statuses(iot, name) == {"thing-3": "QUEUED"}
        assert device.wait_for(
            lambda topic, body: (
                topic == "notify" and name in [j["jobId"] for j in body["jobs"].get("QUEUED", [])]
            )
        )
        iot.remove_thing_from_thing_group(thingGroupName=name, thingName="thing-3")
        assert statuses(iot, name) == {"thing-3": "REMOVED"}
    finally:
        device.close()
    job = iot.describe_job(jobId=name)["job"]
    assert (job["targetSelection"], job["status"]) == ("CONTINUOUS", "IN_PROGRESS")
    assert [j["jobId"] for j in iot.list_jobs(targetSelection="CONTINUOUS")["jobs"]].count(name)
    iot.cancel_job(jobId=name)


def test_associate_targets_adds_a_group_to_a_continuous_job_only(iot, name):
    iot.create_thing_group(thingGroupName=name)
    iot.add_thing_to_thing_group(thingGroupName=name, thingName="thing-2")
    iot.create_job(
        jobId=name, targets=[thing_arn("thing-1")], document=DOCUMENT, targetSelection="CONTINUOUS"
    )
    iot.associate_targets_with_job(jobId=name, targets=[thing_group_arn(name)], comment="more")
    assert statuses(iot, name) == {"thing-1": "QUEUED", "thing-2": "QUEUED"}
    assert thing_group_arn(name) in iot.describe_job(jobId=name)["job"]["targets"]
    iot.create_job(jobId=name + "-s", targets=[thing_arn("thing-1")], document=DOCUMENT)
    error = error_of(
        iot.associate_targets_with_job, jobId=name + "-s", targets=[thing_group_arn(name)]
    )
    assert error["Code"] == "InvalidRequestException" and "SNAPSHOT" in error["Message"]
    for job_id in (name, name + "-s"):
        iot.cancel_job(jobId=job_id)


# --------------------------------------------------------------------------- job management


def test_delete_job_without_force_needs_a_completed_or_canceled_job(iot, name):
    iot.create_job(jobId=name, targets=[thing_arn("thing-2")], document=DOCUMENT)
    error = error_of(iot.delete_job, jobId=name)
    assert error["Code"] == "InvalidStateTransitionException"
    assert "COMPLETED or CANCELED" in error["Message"]
    iot.cancel_job(jobId=name)
    iot.delete_job(jobId=name)
    assert error_of(iot.describe_job, jobId=name)["Code"] == "ResourceNotFoundException"


def test_update_job_changes_description_and_configurations(iot, name):
    iot.create_job(jobId=name, targets=[thing_arn("thing-2")], document=DOCUMENT)
    iot.update_job(
        jobId=name,
        description="new words",
        timeoutConfig={"inProgressTimeoutInMinutes": 30},
        abortConfig={
            "criteriaList": [
                {
                    "failureType": "ALL",
                    "action": "CANCEL",
                    "thresholdPercentage": 50,
                    "minNumberOfExecutedThings": 10,
                }
            ]
        },
    )
    job = iot.describe_job(jobId=name)["job"]
    assert job["description"] == "new words"
    assert job["timeoutConfig"] == {"inProgressTimeoutInMinutes": 30}
    assert job["abortConfig"]["criteriaList"][0]["minNumberOfExecutedThings"] == 10
    iot.cancel_job(jobId=name)


def test_delete_job_execution_removes_one_execution(iot, name):
    iot.create_job(
        jobId=name, targets=[thing_arn("thing-2"), thing_arn("thing-3")], document=DOCUMENT
    )
    iot.delete_job_execution(jobId=name, thingName="thing-2", executionNumber=1)
    assert statuses(iot, name) == {"thing-3": "QUEUED"}
    error = error_of(iot.delete_job_execution, jobId=name, thingName="thing-2", executionNumber=1)
    assert error["Code"] == "ResourceNotFoundException"
    iot.cancel_job(jobId=name)


def test_tags_are_stored_listed_and_removed(iot, name):
    iot.create_job(
        jobId=name,
        targets=[thing_arn("thing-2")],
        document=DOCUMENT,
        tags=[{"Key": "team", "Value": "ops"}],
    )
    arn = iot.describe_job(jobId=name)["job"]["jobArn"]
    iot.tag_resource(resourceArn=arn, tags=[{"Key": "stage", "Value": "canary"}])
    tags = iot.list_tags_for_resource(resourceArn=arn)["tags"]
    assert tags == [{"Key": "stage", "Value": "canary"}, {"Key": "team", "Value": "ops"}]
    iot.untag_resource(resourceArn=arn, tagKeys=["team"])
    assert iot.list_tags_for_resource(resourceArn=arn)["tags"] == [
        {"Key": "stage", "Value": "canary"}
    ]
    error = error_of(iot.list_tags_for_resource, resourceArn=arn.replace(name, name + "x"))
    assert error["Code"] == "ResourceNotFoundException"
    iot.cancel_job(jobId=name)


# --------------------------------------------------------------------------- paging, endpoints


def test_list_jobs_pages_with_max_results_and_next_token(iot, name):
    for index in range(3):
        iot.create_job(jobId=f"{name}-{index}", targets=[thing_arn("thing-3")], document=DOCUMENT)
    seen = []
    token = None
    while True:
        kwargs = {"maxResults": 2, **({"nextToken": token} if token else {})}
        page = iot.list_jobs(**kwargs)
        assert len(page["jobs"]) <= 2
        seen += [j["jobId"] for j in page["jobs"]]
        token = page.get("nextToken")
        if token is None:
            break
    assert [f"{name}-{i}" for i in range(3)] == [j for j in seen if j.startswith(name)]
    paged = [
        j["jobId"]
        for page in iot.get_paginator("list_jobs").paginate(PaginationConfig={"PageSize": 1})
        for j in page["jobs"]
    ]
    assert paged == seen
    for index in range(3):
        iot.cancel_job(jobId=f"{name}-{index}")


def test_a_next_token_never_issued_is_invalid_request(iot):
    error = error_of(iot.list_jobs, nextToken="not-a-token")
    assert error["Code"] == "InvalidRequestException"
    assert "nextToken" in error["Message"]
    error = error_of(iot.list_things, nextToken="bm90LWEtdG9rZW4")
    assert error["Code"] == "InvalidRequestException"


def test_max_results_outside_aws_bounds_is_invalid_request(stack, tmp_path):
    result = aws_cli(stack, tmp_path, "list-jobs", "--max-results", "251", "--no-paginate")
    assert "(InvalidRequestException)" in result.stderr
    assert "maxResults must be 1 to 250, got 251" in result.stderr


def test_describe_endpoint_names_the_local_mqtt_endpoint(stack, iot):
    address = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    assert address == f"localhost:{stack.mqtt_port}"
    error = error_of(iot.describe_endpoint, endpointType="iot:CredentialProvider")
    assert error["Code"] == "InvalidRequestException"


def test_registry_survives_a_service_restart(stack, iot, name):
    iot.create_thing_group(thingGroupName=name)
    iot.add_thing_to_thing_group(thingGroupName=name, thingName="thing-1")
    stack.restart_service()
    assert stack.iot_client().list_things_in_thing_group(thingGroupName=name)["things"] == [
        "thing-1"
    ]


# --------------------------------------------------------------------------- rollouts, aborts


@pytest.fixture(scope="module")
def fast_stack(tmp_path_factory) -> Iterator[LocalStack]:
    """Four things and a service minute of one second, for rollouts and aborts."""
    things = [f"node-{i}" for i in range(1, 5)]
    with LocalStack(tmp_path_factory.mktemp("fast"), things=things, minute_seconds=1.0) as stack:
        yield stack


@pytest.fixture(scope="module")
def slow_minute_stack(tmp_path_factory) -> Iterator[LocalStack]:
    """Four things and a service minute of 30 s: a rollout's second minute never comes
    within a test."""
    things = [f"unit-{i}" for i in range(1, 5)]
    with LocalStack(tmp_path_factory.mktemp("slow"), things=things, minute_seconds=30.0) as stack:
        yield stack


def group_rollout(stack, name: str, rollout: dict):
    """A job on a new group of all the stack's things with ``rollout``; the stack's client."""
    iot = stack.iot_client()
    make_group(iot, name, stack.things)
    iot.create_job(
        jobId=name,
        targets=[thing_group_arn(name)],
        document=DOCUMENT,
        jobExecutionsRolloutConfig=rollout,
    )
    return iot


def queued_times(iot, job_id: str):
    summaries = iot.list_job_executions_for_job(jobId=job_id)["executionSummaries"]
    return sorted(s["jobExecutionSummary"]["queuedAt"].timestamp() for s in summaries)


def test_rollout_queues_executions_at_the_maximum_per_minute(fast_stack, name):
    iot = group_rollout(fast_stack, name, {"maximumPerMinute": 2})
    assert iot.describe_job(jobId=name)["job"]["jobExecutionsRolloutConfig"] == {
        "maximumPerMinute": 2
    }
    wait_until(lambda: len(statuses(iot, name)) == 4, "the second minute's executions")
    first, second, third, fourth = queued_times(iot, name)
    # Two in the first window, two a service minute (1 s) later.
    assert second - first < 0.5 and fourth - third < 0.5
    assert third - first >= 0.9
    assert iot.describe_job(jobId=name)["job"]["isConcurrent"] is False
    iot.cancel_job(jobId=name)


def test_exponential_rollout_doubles_its_rate_as_things_are_notified(fast_stack, name):
    iot = group_rollout(
        fast_stack,
        name,
        {
            "maximumPerMinute": 100,
            "exponentialRate": {
                "baseRatePerMinute": 1,
                "incrementFactor": 2.0,
                "rateIncreaseCriteria": {"numberOfNotifiedThings": 1},
            },
        },
    )
    wait_until(lambda: len(statuses(iot, name)) == 4, "the whole rollout")
    times = queued_times(iot, name)
    # One in the first service minute, two in the second (rate 1 -> 2), the last in the third.
    assert times[2] - times[1] < 0.5
    assert times[1] - times[0] >= 0.9 and times[3] - times[2] >= 0.9
    iot.cancel_job(jobId=name)


def test_a_job_holding_executions_back_is_concurrent_until_canceled(slow_minute_stack, name):
    iot = group_rollout(slow_minute_stack, name, {"maximumPerMinute": 1})
    assert len(statuses(iot, name)) == 1
    assert iot.describe_job(jobId=name)["job"]["isConcurrent"] is True
    iot.cancel_job(jobId=name)
    job = iot.describe_job(jobId=name)["job"]
    assert (job["status"], job["isConcurrent"]) == ("CANCELED", False)
    assert list(statuses(iot, name).values()) == ["CANCELED"]


def test_bad_rollout_and_abort_configs_name_the_field(iot, name):
    cases = [
        ({"jobExecutionsRolloutConfig": {"maximumPerMinute": 1001}}, "maximumPerMinute must be 1"),
        (
            {
                "jobExecutionsRolloutConfig": {
                    "exponentialRate": {
                        "baseRatePerMinute": 5,
                        "incrementFactor": 1.55,
                        "rateIncreaseCriteria": {"numberOfNotifiedThings": 2},
                    }
                }
            },
            "incrementFactor supports 1 digit(s) after the decimal",
        ),
        (
            {
                "abortConfig": {
                    "criteriaList": [
                        {
                            "failureType": "FAILED",
                            "action": "CANCEL",
                            "thresholdPercentage": 101,
                            "minNumberOfExecutedThings": 1,
                        }
                    ]
                }
            },
            "thresholdPercentage must be 0 to 100",
        ),
    ]
    for fields, expected in cases:
        error = error_of(
            iot.create_job, jobId=name, targets=[thing_arn("thing-1")], document=DOCUMENT, **fields
        )
        assert error["Code"] == "InvalidRequestException", fields
        assert expected in error["Message"]


def wait_until(predicate, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} in {timeout} s")
        time.sleep(0.1)


def test_group_rollout_is_aborted_once_failures_pass_the_threshold_while_agents_run_it(
    slow_minute_stack, name
):
    from agent.errors import JobFailed
    from tests.agent_core_fixtures import InProcessAgent

    iot = slow_minute_stack.iot_client()
    make_group(iot, name, slow_minute_stack.things)
    ran = []

    def failing(document, job):
        ran.append(job.job_id)
        raise JobFailed("the update does not apply here")

    agents = [
        InProcessAgent(slow_minute_stack, thing).add("TEST", failing)
        for thing in slow_minute_stack.things
    ]
    try:
        for agent in agents:
            agent.start()
        iot.create_job(
            jobId=name,
            targets=[thing_group_arn(name)],
            document=DOCUMENT,
            jobExecutionsRolloutConfig={"maximumPerMinute": 2},
            abortConfig={
                "criteriaList": [
                    {
                        "failureType": "FAILED",
                        "action": "CANCEL",
                        "thresholdPercentage": 50,
                        "minNumberOfExecutedThings": 2,
                    }
                ]
            },
        )
        wait_until(lambda: iot.describe_job(jobId=name)["job"]["status"] == "CANCELED", "abort")
    finally:
        for agent in agents:
            agent.stop()
    job = iot.describe_job(jobId=name)["job"]
    assert job["reasonCode"] == "ABORT_FAILED_THRESHOLD"
    assert "abortConfig" in job["comment"]
    # The first minute's two things ran and failed; the rest were never queued (the second
    # minute is 30 s away).
    assert sorted(statuses(iot, name).values()) == ["FAILED", "FAILED"]
    assert len(ran) == 2


# --------------------------------------------------------------------------- bad input


JUNK = [None, 1, "x", [1], {"a": [1]}, {"attributes": 5}, {"Key": None}]


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/things/junk-thing"),
        ("PATCH", "/things/thing-1"),
        ("POST", "/thing-groups/junk-group"),
        ("PUT", "/thing-groups/addThingToThingGroup"),
        ("PUT", "/thing-groups/removeThingFromThingGroup"),
        ("POST", "/jobs/junk-job/targets"),
        ("PATCH", "/jobs/junk-job"),
        ("PUT", "/jobs/junk-job"),
        ("POST", "/tags"),
        ("POST", "/untag"),
    ],
)
def test_junk_in_every_field_is_a_client_error_never_a_crash(stack, method, path):
    import urllib.error
    import urllib.request

    fields = {
        "thingName": None, "thingArn": None, "thingGroupName": None, "thingGroupArn": None,
        "attributePayload": None, "thingGroupProperties": None, "parentGroupName": None,
        "tags": None, "tagKeys": None, "resourceArn": None, "targets": None, "comment": None,
        "description": None, "timeoutConfig": None, "jobExecutionsRolloutConfig": None,
        "abortConfig": None, "jobExecutionsRetryConfig": None, "targetSelection": None,
        "namespaceId": None, "document": None, "expectedVersion": None,
    }  # fmt: skip
    for field in fields:
        for junk in JUNK:
            body = json.dumps({field: junk}).encode()
            request = urllib.request.Request(stack.control_url + path, data=body, method=method)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    status = response.status
            except urllib.error.HTTPError as error:
                status = error.code
                assert error.headers["x-amzn-ErrorType"] != "InternalFailureException", (
                    field,
                    junk,
                    error.read(),
                )
            assert status < 500, (field, junk)


def test_a_rollout_goes_on_after_a_service_restart(fast_stack, name):
    iot = group_rollout(fast_stack, name, {"maximumPerMinute": 1})
    restarted = time.time()
    fast_stack.restart_service()
    iot = fast_stack.iot_client()
    wait_until(lambda: len(statuses(iot, name)) == 4, "the rest of the rollout", timeout=20)
    assert queued_times(iot, name)[-1] > restarted  # released by the restarted service
    iot.cancel_job(jobId=name)


def test_cli_targets_a_thing_group(stack, tmp_path, name):
    for args in (
        ["create-thing-group", "--thing-group-name", name],
        ["add-thing-to-thing-group", "--thing-group-name", name, "--thing-name", "thing-3"],
        [
            "create-job", "--job-id", name, "--targets", thing_group_arn(name),
            "--document", DOCUMENT, "--target-selection", "CONTINUOUS",
        ],
    ):  # fmt: skip
        result = aws_cli(stack, tmp_path, *args)
        assert result.returncode == 0, result.stderr
    listed = aws_cli(stack, tmp_path, "list-jobs", "--thing-group-name", name)
    assert [j["jobId"] for j in json.loads(listed.stdout)["jobs"]] == [name]
    things = aws_cli(stack, tmp_path, "list-things-in-thing-group", "--thing-group-name", name)
    assert json.loads(things.stdout)["things"] == ["thing-3"]
    assert aws_cli(stack, tmp_path, "cancel-job", "--job-id", name).returncode == 0
