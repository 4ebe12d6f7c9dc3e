"""The control plane end to end: boto3's ``iot`` client and the AWS CLI against the real
local Jobs service (SQLite store, MQTT broker, devices moving executions over MQTT)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import paho.mqtt.client as mqtt
import pytest
from botocore.exceptions import ClientError

from local_jobs.model import thing_arn
from local_jobs.stack import LocalStack

AWS = str(Path(sys.executable).with_name("aws"))
THINGS = ["thing-1", "thing-2"]
ARN_1 = thing_arn("thing-1")


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalStack]:
    # One stack (broker and service processes) for the module, to keep it fast: every test
    # makes its own job ids, so they do not see each other's jobs.
    with LocalStack(tmp_path_factory.mktemp("stack"), things=THINGS) as stack:
        yield stack


@pytest.fixture(scope="module")
def iot(stack):
    return stack.iot_client()


@pytest.fixture
def job_id() -> str:
    return "job-" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory) -> Dict[str, str]:
    home = tmp_path_factory.mktemp("cli-home")
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(home / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "no-credentials"),
        AWS_PAGER="",
        HOME=str(home),
    )
    return env


@pytest.fixture
def cli(stack, cli_env, tmp_path) -> Callable[..., subprocess.CompletedProcess]:
    """``cli("describe-job", "--job-id", "x")``: the real ``aws iot`` run in ``tmp_path``."""

    def run(*args: str) -> subprocess.CompletedProcess:
        command = [AWS, "iot", *args, "--endpoint-url", stack.control_url, "--output", "json"]
        return subprocess.run(
            command,
            env=cli_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


class Device:
    """A thing on the broker, publishing device Jobs API requests over mutual TLS."""

    def __init__(self, stack, thing_name: str) -> None:
        credentials = stack.thing(thing_name)
        self.thing_name = thing_name
        self.replies: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=thing_name)
        self.client.tls_set(
            ca_certs=str(stack.ca_path),
            certfile=str(credentials.certificate),
            keyfile=str(credentials.private_key),
        )
        subscribed: queue.Queue[int] = queue.Queue()
        self.client.on_message = lambda _c, _u, message: self.replies.put(message)
        self.client.on_subscribe = lambda _c, _u, mid, *_rest: subscribed.put(mid)
        self.client.connect(stack.mqtt_host, stack.mqtt_port)
        self.client.loop_start()
        _, mid = self.client.subscribe(f"$aws/things/{thing_name}/jobs/#", qos=1)
        assert subscribed.get(timeout=10) == mid

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def request(self, operation: str, payload: dict) -> dict:
        """Publish ``operation`` and return its accepted reply; fail on a rejection."""
        token = uuid.uuid4().hex
        topic = f"$aws/things/{self.thing_name}/jobs/{operation}"
        self.client.publish(topic, json.dumps({**payload, "clientToken": token}), qos=1)
        deadline = time.monotonic() + 10
        while True:
            message = self.replies.get(timeout=max(0.0, deadline - time.monotonic()))
            body = json.loads(message.payload)
            if body.get("clientToken") != token or message.topic == topic:
                continue  # another reply, or our own request echoed by the # filter
            assert message.topic == f"{topic}/accepted", body
            return body

    def start(self, job_id: str) -> None:
        self.request(f"{job_id}/update", {"status": "IN_PROGRESS"})


@pytest.fixture
def device(stack) -> Iterator[Device]:
    device = Device(stack, "thing-1")
    yield device
    device.close()


def create(iot, job_id: str, things: List[str] = ("thing-1",), **fields) -> dict:
    if "documentSource" not in fields:
        fields.setdefault("document", json.dumps({"jobType": "TEST", "id": job_id}))
    return iot.create_job(jobId=job_id, targets=[thing_arn(t) for t in things], **fields)


def error_of(call, *args, **kwargs) -> Dict[str, str]:
    with pytest.raises(ClientError) as caught:
        call(*args, **kwargs)
    return caught.value.response["Error"]


def execution(iot, job_id: str, thing: str = "thing-1") -> dict:
    return iot.describe_job_execution(jobId=job_id, thingName=thing)["execution"]


# --------------------------------------------------------------------------- AWS CLI


def test_cli_create_job_as_the_issue_writes_it_queues_the_job(stack, cli_env, iot, tmp_path):
    # Exactly the command of issue 2 (job id "1" is used by no other test of this module).
    (tmp_path / "job.json").write_text('{"jobType": "APT_UPDATE"}')
    command = [AWS, "iot", "create-job", "--endpoint-url", stack.control_url, "--job-id", "1"]
    command += ["--targets", ARN_1, "--document", "file://job.json"]
    result = subprocess.run(
        command, env=cli_env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "jobArn": "arn:aws:iot:us-east-1:123456789012:job/1",
        "jobId": "1",
    }
    assert iot.get_job_document(jobId="1")["document"] == '{"jobType": "APT_UPDATE"}'
    assert execution(iot, "1")["status"] == "QUEUED"


def test_cli_document_source_is_read_from_the_documents_folder(cli, iot, stack, job_id):
    # The CLI sends --document-source verbatim; the service reads it under its documents folder.
    (stack.documents_dir / f"{job_id}.json").write_text('{"from": "documents folder"}')
    source = f"file://{job_id}.json"
    result = cli("create-job", "--job-id", job_id, "--targets", ARN_1, "--document-source", source)
    assert result.returncode == 0, result.stderr
    assert iot.get_job_document(jobId=job_id)["document"] == '{"from": "documents folder"}'
    assert iot.describe_job(jobId=job_id)["documentSource"] == source


def test_cli_create_job_with_a_reused_id_fails_with_already_exists(cli, iot, job_id):
    create(iot, job_id)
    result = cli("create-job", "--job-id", job_id, "--targets", ARN_1, "--document", "{}")
    assert result.returncode != 0
    assert "(ResourceAlreadyExistsException)" in result.stderr
    assert f"Job {job_id} already exists." in result.stderr


def test_cli_reads_jobs_and_executions(cli, iot, job_id):
    create(iot, job_id, ["thing-1", "thing-2"], description="from the CLI test")
    job = json.loads(cli("describe-job", "--job-id", job_id).stdout)["job"]
    listed = cli("list-job-executions-for-thing", "--thing-name", "thing-2", "--status", "QUEUED")
    described = cli("describe-job-execution", "--job-id", job_id, "--thing-name", "thing-2")
    assert job["description"] == "from the CLI test"
    assert job["jobProcessDetails"]["numberOfQueuedThings"] == 2
    assert job_id in [s["jobId"] for s in json.loads(listed.stdout)["executionSummaries"]]
    assert json.loads(described.stdout)["execution"]["thingArn"] == thing_arn("thing-2")


def test_cli_cancel_and_delete_with_force(cli, iot, job_id, device):
    create(iot, job_id)
    device.start(job_id)
    canceled = cli("cancel-job", "--job-id", job_id, "--force")
    deleted = cli("delete-job", "--job-id", job_id, "--force")
    assert (canceled.returncode, deleted.returncode) == (0, 0), canceled.stderr + deleted.stderr
    assert error_of(iot.describe_job, jobId=job_id)["Code"] == "ResourceNotFoundException"


def test_cli_bad_target_names_the_target(cli, job_id):
    result = cli("create-job", "--job-id", job_id, "--targets", "thing-1", "--document", "{}")
    assert "(InvalidRequestException)" in result.stderr
    assert 'targets: "thing-1" is not a thing or thing group ARN' in result.stderr


# --------------------------------------------------------------------------- CreateJob


def test_create_job_returns_its_arn_and_queues_each_target(iot, job_id):
    response = create(iot, job_id, ["thing-1", "thing-2"], description="two things")
    assert response["jobArn"] == f"arn:aws:iot:us-east-1:123456789012:job/{job_id}"
    assert (response["jobId"], response["description"]) == (job_id, "two things")
    assert [execution(iot, job_id, t)["status"] for t in THINGS] == ["QUEUED", "QUEUED"]


def test_create_job_from_an_absolute_document_source(iot, tmp_path, job_id):
    path = tmp_path / "job.json"
    path.write_text('{"from": "path"}')
    create(iot, job_id, documentSource=str(path))
    assert iot.get_job_document(jobId=job_id)["document"] == '{"from": "path"}'
    assert iot.describe_job(jobId=job_id)["documentSource"] == str(path)


def test_create_job_from_a_file_url_document_source(iot, tmp_path, job_id):
    path = tmp_path / "job document.json"
    path.write_text('{"from": "url"}')
    create(iot, job_id, documentSource=path.as_uri())
    assert iot.get_job_document(jobId=job_id)["document"] == '{"from": "url"}'


def test_create_job_with_a_reused_id_fails_with_already_exists(iot, job_id):
    create(iot, job_id)
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException) as caught:
        create(iot, job_id)
    assert caught.value.response["Error"]["Message"] == f"Job {job_id} already exists."


def test_create_job_from_s3_explains_how_to_use_a_local_file(iot, job_id):
    error = error_of(
        create,
        iot,
        job_id,
        documentSource="https://s3.amazonaws.com/bucket/job.json",
    )
    assert error["Code"] == "InvalidRequestException"
    assert "S3 is not reachable" in error["Message"]
    assert "--document file://job.json" in error["Message"]


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"targets": ["thing-1"]}, 'targets: "thing-1" is not a thing or thing group ARN'),
        ({"targets": ["arn:aws:iot:us-east-1:123456789012:job/x"]}, "is a job ARN"),
        ({"document": "x" * 32769}, "document: the job document is 32769 characters long"),
        ({"document": "not json"}, "document: the job document is not valid JSON"),
        (
            {"timeoutConfig": {"inProgressTimeoutInMinutes": 10081}},
            "timeoutConfig.inProgressTimeoutInMinutes must be 1 to 10080",
        ),
    ],
)
def test_bad_create_job_input_is_invalid_request_naming_the_field(iot, job_id, fields, expected):
    fields = {"targets": [thing_arn("thing-1")], "document": "{}", **fields}
    error = error_of(iot.create_job, jobId=job_id, **fields)
    assert error["Code"] == "InvalidRequestException"
    assert expected in error["Message"]
    assert error_of(iot.describe_job, jobId=job_id)["Code"] == "ResourceNotFoundException"


def test_bad_job_id_is_invalid_request_naming_job_id(iot):
    error = error_of(
        iot.create_job, jobId="no spaces!", targets=[thing_arn("thing-1")], document="{}"
    )
    assert error["Code"] == "InvalidRequestException"
    assert "jobId 'no spaces!' is invalid" in error["Message"]


# --------------------------------------------------------------------------- reading


def test_describe_job_reports_targets_configuration_and_counts(iot, job_id, device):
    before = time.time()
    create(
        iot,
        job_id,
        ["thing-1", "thing-2"],
        timeoutConfig={"inProgressTimeoutInMinutes": 30},
        jobExecutionsRetryConfig={
            "criteriaList": [{"failureType": "FAILED", "numberOfRetries": 2}]
        },
    )
    device.start(job_id)
    job = iot.describe_job(jobId=job_id)["job"]
    assert job["status"] == "IN_PROGRESS"
    assert job["targets"] == [thing_arn(t) for t in THINGS]
    assert job["timeoutConfig"] == {"inProgressTimeoutInMinutes": 30}
    assert job["jobExecutionsRetryConfig"]["criteriaList"] == [
        {"failureType": "FAILED", "numberOfRetries": 2}
    ]
    assert before - 1 <= job["createdAt"].timestamp() <= time.time() + 1
    counts = job["jobProcessDetails"]
    assert (counts["numberOfInProgressThings"], counts["numberOfQueuedThings"]) == (1, 1)


def test_describe_job_execution_follows_the_device(iot, job_id, device):
    create(iot, job_id, timeoutConfig={"inProgressTimeoutInMinutes": 30})
    queued = execution(iot, job_id)
    device.start(job_id)
    device.request(f"{job_id}/update", {"status": "IN_PROGRESS", "statusDetails": {"step": "2"}})
    started = execution(iot, job_id)
    assert (queued["status"], queued["versionNumber"], queued["executionNumber"]) == (
        "QUEUED",
        1,
        1,
    )
    assert "startedAt" not in queued
    assert started["status"] == "IN_PROGRESS"
    assert started["statusDetails"] == {"detailsMap": {"step": "2"}}
    assert started["versionNumber"] == 3
    assert started["startedAt"] >= started["queuedAt"]
    assert 0 < started["approximateSecondsBeforeTimedOut"] <= 30 * 60


def test_list_jobs_filters_by_status(cli, iot, job_id):
    create(iot, job_id)
    iot.cancel_job(jobId=job_id)
    every = json.loads(cli("list-jobs").stdout)["jobs"]
    canceled = iot.list_jobs(status="CANCELED")["jobs"]
    in_progress = iot.list_jobs(status="IN_PROGRESS")["jobs"]
    assert job_id in [job["jobId"] for job in every]
    assert job_id in [job["jobId"] for job in canceled]
    assert job_id not in [job["jobId"] for job in in_progress]


def test_describe_unknown_job_is_resource_not_found(iot, job_id):
    assert error_of(iot.describe_job, jobId=job_id)["Code"] == "ResourceNotFoundException"


def test_list_executions_for_job_filters_by_status(iot, job_id, device):
    create(iot, job_id, ["thing-1", "thing-2"])
    device.start(job_id)
    every = iot.list_job_executions_for_job(jobId=job_id)["executionSummaries"]
    in_progress = iot.list_job_executions_for_job(jobId=job_id, status="IN_PROGRESS")
    assert [s["thingArn"] for s in every] == [thing_arn(t) for t in THINGS]
    assert [s["thingArn"] for s in in_progress["executionSummaries"]] == [thing_arn("thing-1")]
    summary = in_progress["executionSummaries"][0]["jobExecutionSummary"]
    assert (summary["status"], summary["executionNumber"]) == ("IN_PROGRESS", 1)


def test_list_executions_for_thing_filters_by_status(iot, device):
    first, second = ("job-" + uuid.uuid4().hex[:12] for _ in range(2))
    create(iot, first)
    create(iot, second)
    device.start(first)
    queued = iot.list_job_executions_for_thing(thingName="thing-1", status="QUEUED")
    in_progress = iot.list_job_executions_for_thing(thingName="thing-1", status="IN_PROGRESS")
    queued_ids = [s["jobId"] for s in queued["executionSummaries"]]
    in_progress_ids = [s["jobId"] for s in in_progress["executionSummaries"]]
    assert second in queued_ids and first not in queued_ids
    assert first in in_progress_ids and second not in in_progress_ids


# --------------------------------------------------------------------------- cancel and delete


def test_cancel_job_without_force_leaves_in_progress_executions_running(iot, job_id, device):
    create(iot, job_id, ["thing-1", "thing-2"])
    device.start(job_id)
    response = iot.cancel_job(jobId=job_id, reasonCode="NOT_NEEDED", comment="changed my mind")
    job = iot.describe_job(jobId=job_id)["job"]
    assert response["jobId"] == job_id
    assert (job["status"], job["forceCanceled"]) == ("CANCELED", False)
    assert (job["reasonCode"], job["comment"]) == ("NOT_NEEDED", "changed my mind")
    assert execution(iot, job_id, "thing-1")["status"] == "IN_PROGRESS"
    assert execution(iot, job_id, "thing-2")["status"] == "CANCELED"


def test_cancel_job_with_force_cancels_in_progress_executions(iot, job_id, device):
    create(iot, job_id)
    device.start(job_id)
    iot.cancel_job(jobId=job_id, force=True)
    assert iot.describe_job(jobId=job_id)["job"]["forceCanceled"] is True
    canceled = execution(iot, job_id)
    assert (canceled["status"], canceled["forceCanceled"]) == ("CANCELED", True)


def test_delete_job_with_an_execution_in_progress_needs_force(iot, job_id, device):
    create(iot, job_id)
    device.start(job_id)
    error = error_of(iot.delete_job, jobId=job_id)
    iot.delete_job(jobId=job_id, force=True)
    assert error["Code"] == "InvalidStateTransitionException"
    assert error_of(iot.describe_job, jobId=job_id)["Code"] == "ResourceNotFoundException"
    assert error_of(execution, iot, job_id)["Code"] == "ResourceNotFoundException"


def test_cancel_execution_in_progress_needs_force(iot, job_id, device):
    create(iot, job_id)
    device.start(job_id)
    error = error_of(iot.cancel_job_execution, jobId=job_id, thingName="thing-1")
    assert error["Code"] == "InvalidStateTransitionException"
    assert execution(iot, job_id)["status"] == "IN_PROGRESS"


def test_cancel_execution_with_a_stale_expected_version_is_a_version_conflict(iot, job_id, device):
    create(iot, job_id)
    device.start(job_id)
    error = error_of(
        iot.cancel_job_execution, jobId=job_id, thingName="thing-1", force=True, expectedVersion=1
    )
    assert error["Code"] == "VersionConflictException"
    assert execution(iot, job_id)["status"] == "IN_PROGRESS"


def test_cancel_execution_with_force_and_current_version_cancels_it(iot, job_id, device):
    create(iot, job_id)
    device.start(job_id)
    version = execution(iot, job_id)["versionNumber"]
    iot.cancel_job_execution(
        jobId=job_id,
        thingName="thing-1",
        force=True,
        expectedVersion=version,
        statusDetails={"why": "operator"},
    )
    canceled = execution(iot, job_id)
    assert (canceled["status"], canceled["forceCanceled"]) == ("CANCELED", True)
    assert canceled["statusDetails"]["detailsMap"] == {"why": "operator"}


def test_cancel_queued_execution_without_force(iot, job_id):
    create(iot, job_id, ["thing-1", "thing-2"])
    iot.cancel_job_execution(jobId=job_id, thingName="thing-2")
    assert execution(iot, job_id, "thing-2")["status"] == "CANCELED"
    assert execution(iot, job_id, "thing-1")["status"] == "QUEUED"


def test_jobs_and_executions_survive_a_service_restart(stack, iot, job_id, device):
    create(iot, job_id, ["thing-1", "thing-2"], description="kept")
    device.start(job_id)
    stack.restart_service()
    assert iot.describe_job(jobId=job_id)["job"]["description"] == "kept"
    assert execution(iot, job_id, "thing-1")["status"] == "IN_PROGRESS"
    assert execution(iot, job_id, "thing-2")["status"] == "QUEUED"
