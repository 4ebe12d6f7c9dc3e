"""Unit checks of the control plane's HTTP shapes, against an in-memory JobsService fake.

The fake holds only what these shape checks need; the behaviour users rely on is proven end to
end against the real service in test_control_plane_e2e.py.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import replace
from typing import Dict, List, Sequence, Tuple

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from local_jobs.control_plane import (
    SUPPORTED_OPERATIONS,
    check_document,
    read_document_source,
    serve,
    target_thing_name,
)
from local_jobs.model import (
    ExecutionStatus,
    InvalidRequestError,
    InvalidStateTransitionError,
    Job,
    JobExecution,
    JobsService,
    JobStatus,
    ResourceAlreadyExistsError,
    ResourceNotFoundError,
    thing_arn,
)

NOW = 1_700_000_000.0


class FakeJobsService(JobsService):
    """Just enough of JobsService to see what the control plane sends and returns."""

    def __init__(self) -> None:
        self.jobs: Dict[str, Job] = {}
        self.executions: Dict[Tuple[str, str], JobExecution] = {}
        self.calls: List[Tuple[str, tuple, dict]] = []

    def create_job(self, job_id, targets, document, **options) -> Job:
        self.calls.append(("create_job", (job_id, tuple(targets), document), options))
        if job_id in self.jobs:
            raise ResourceAlreadyExistsError(f"Job {job_id} already exists.")
        job = Job(
            job_id=job_id,
            document=document,
            targets=tuple(targets),
            status=JobStatus.IN_PROGRESS,
            created_at=NOW,
            last_updated_at=NOW,
            description=options.get("description"),
            in_progress_timeout_minutes=options.get("in_progress_timeout_minutes"),
            retry_criteria=tuple(options.get("retry_criteria", ())),
        )
        self.jobs[job_id] = job
        for name in targets:
            self.executions[job_id, name] = JobExecution(
                job_id, name, ExecutionStatus.QUEUED, 1, 1, NOW, NOW
            )
        return job

    def describe_job(self, job_id: str) -> Job:
        if job_id not in self.jobs:
            raise ResourceNotFoundError(f"Job {job_id} cannot be found.")
        return self.jobs[job_id]

    def list_jobs(self) -> Sequence[Job]:
        return list(self.jobs.values())

    def job_process_counts(self, job_id):
        counts: Dict[ExecutionStatus, int] = {}
        for (jid, _), execution in self.executions.items():
            if jid == job_id:
                counts[execution.status] = counts.get(execution.status, 0) + 1
        return counts

    def cancel_job(self, job_id, **options) -> Job:
        self.calls.append(("cancel_job", (job_id,), options))
        job = replace(
            self.describe_job(job_id),
            status=JobStatus.CANCELED,
            force_canceled=options["force"],
            reason_code=options["reason_code"],
            comment=options["comment"],
        )
        self.jobs[job_id] = job
        return job

    def delete_job(self, job_id, *, force=False) -> None:
        self.calls.append(("delete_job", (job_id,), {"force": force}))
        self.describe_job(job_id)
        del self.jobs[job_id]

    def describe_job_execution(self, job_id, thing_name, execution_number=None):
        self.calls.append(("describe_job_execution", (job_id, thing_name, execution_number), {}))
        try:
            return self.executions[job_id, thing_name]
        except KeyError:
            raise ResourceNotFoundError(f"no execution of {job_id} on {thing_name}") from None

    def list_job_executions_for_job(self, job_id, status=None) -> Sequence[JobExecution]:
        self.calls.append(("list_job_executions_for_job", (job_id, status), {}))
        return [e for (j, _), e in self.executions.items() if j == job_id]

    def list_job_executions_for_thing(self, thing_name, status=None):
        self.calls.append(("list_job_executions_for_thing", (thing_name, status), {}))
        return [e for (_, t), e in self.executions.items() if t == thing_name]

    def cancel_job_execution(self, job_id, thing_name, **options) -> None:
        self.calls.append(("cancel_job_execution", (job_id, thing_name), options))
        if not options["force"]:
            raise InvalidStateTransitionError("it is IN_PROGRESS")


@pytest.fixture
def fake():
    return FakeJobsService()


@pytest.fixture
def server(fake, tmp_path):
    documents = tmp_path / "documents"
    documents.mkdir()
    server = serve(fake, "127.0.0.1", 0, documents_dir=documents)
    yield server
    server.shutdown()


@pytest.fixture
def iot(server):
    return boto3.client(
        "iot",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}),
    )


ARN = thing_arn("thing-1")


def test_create_job_returns_arn_id_and_description(iot, fake):
    response = iot.create_job(jobId="j1", targets=[ARN], document="{}", description="d")
    assert (response["jobArn"], response["jobId"], response["description"]) == (
        "arn:aws:iot:us-east-1:123456789012:job/j1",
        "j1",
        "d",
    )


def test_create_job_passes_thing_names_timeout_and_retries_to_the_service(iot, fake):
    iot.create_job(
        jobId="j1",
        targets=[ARN, thing_arn("thing-2", "eu-west-1")],
        document='{"a": 1}',
        timeoutConfig={"inProgressTimeoutInMinutes": 5},
        jobExecutionsRetryConfig={
            "criteriaList": [{"failureType": "FAILED", "numberOfRetries": 2}]
        },
    )
    name, args, options = fake.calls[0]
    assert args == ("j1", ("thing-1", "thing-2"), '{"a": 1}')
    assert options["in_progress_timeout_minutes"] == 5
    assert [(c.failure_type.value, c.number_of_retries) for c in options["retry_criteria"]] == [
        ("FAILED", 2)
    ]


def test_service_error_becomes_client_error_with_aws_code_and_message(iot):
    iot.create_job(jobId="j1", targets=[ARN], document="{}")
    with pytest.raises(ClientError) as caught:
        iot.create_job(jobId="j1", targets=[ARN], document="{}")
    error = caught.value.response["Error"]
    assert (error["Code"], error["Message"]) == (
        "ResourceAlreadyExistsException",
        "Job j1 already exists.",
    )
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409


def test_describe_job_has_the_job_shape_with_epoch_timestamps(iot):
    iot.create_job(
        jobId="j1",
        targets=[ARN],
        document="{}",
        timeoutConfig={"inProgressTimeoutInMinutes": 5},
        jobExecutionsRetryConfig={"criteriaList": [{"failureType": "ALL", "numberOfRetries": 1}]},
    )
    job = iot.describe_job(jobId="j1")["job"]
    assert job["targets"] == [ARN]
    assert job["targetSelection"] == "SNAPSHOT"
    assert job["status"] == "IN_PROGRESS"
    assert job["createdAt"].timestamp() == NOW
    assert job["jobProcessDetails"]["numberOfQueuedThings"] == 1
    assert job["jobProcessDetails"]["numberOfSucceededThings"] == 0
    assert job["timeoutConfig"] == {"inProgressTimeoutInMinutes": 5}
    assert job["jobExecutionsRetryConfig"] == {
        "criteriaList": [{"failureType": "ALL", "numberOfRetries": 1}]
    }


def test_describe_job_echoes_the_document_source(iot, server):
    (server.documents_dir / "job.json").write_text('{"x": 1}')
    iot.create_job(jobId="j1", targets=[ARN], documentSource="job.json")
    assert iot.describe_job(jobId="j1")["documentSource"] == "job.json"
    assert iot.get_job_document(jobId="j1")["document"] == '{"x": 1}'


def test_cancel_job_passes_force_reason_and_comment(iot, fake):
    iot.create_job(jobId="j1", targets=[ARN], document="{}")
    response = iot.cancel_job(jobId="j1", force=True, reasonCode="OLD_1", comment="too old")
    assert response["jobId"] == "j1"
    assert fake.calls[-1] == (
        "cancel_job",
        ("j1",),
        {"force": True, "reason_code": "OLD_1", "comment": "too old"},
    )


@pytest.mark.parametrize("force", [True, False])
def test_delete_job_passes_force(iot, fake, force):
    iot.create_job(jobId="j1", targets=[ARN], document="{}")
    iot.delete_job(jobId="j1", force=force)
    assert fake.calls[-1] == ("delete_job", ("j1",), {"force": force})


def test_describe_job_execution_passes_execution_number_and_has_the_execution_shape(iot, fake):
    iot.create_job(jobId="j1", targets=[ARN], document="{}")
    execution = iot.describe_job_execution(jobId="j1", thingName="thing-1", executionNumber=1)[
        "execution"
    ]
    assert fake.calls[-1][1] == ("j1", "thing-1", 1)
    assert execution["thingArn"] == ARN
    assert execution["status"] == "QUEUED"
    assert execution["statusDetails"] == {"detailsMap": {}}
    assert (execution["executionNumber"], execution["versionNumber"]) == (1, 1)
    assert "startedAt" not in execution


def test_list_calls_pass_the_status_filter_and_return_summaries(iot, fake):
    iot.create_job(jobId="j1", targets=[ARN], document="{}")
    for_job = iot.list_job_executions_for_job(jobId="j1", status="QUEUED", maxResults=5)
    for_thing = iot.list_job_executions_for_thing(thingName="thing-1", status="QUEUED")
    assert fake.calls[-2][1] == ("j1", ExecutionStatus.QUEUED)
    assert fake.calls[-1][1] == ("thing-1", ExecutionStatus.QUEUED)
    assert for_job["executionSummaries"][0]["thingArn"] == ARN
    assert for_thing["executionSummaries"][0]["jobId"] == "j1"
    assert for_thing["executionSummaries"][0]["jobExecutionSummary"]["status"] == "QUEUED"


def test_cancel_job_execution_passes_force_version_and_details(iot, fake):
    iot.cancel_job_execution(
        jobId="j1", thingName="thing-1", force=True, expectedVersion=3, statusDetails={"k": "v"}
    )
    assert fake.calls[-1] == (
        "cancel_job_execution",
        ("j1", "thing-1"),
        {"force": True, "expected_version": 3, "status_details": {"k": "v"}},
    )


def test_unknown_route_is_404_naming_method_path_and_supported_operations(server):
    request = urllib.request.Request(server.url + "/billing-groups", method="GET")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 404
    assert caught.value.headers["x-amzn-ErrorType"] == "UnknownOperationException"
    message = json.loads(caught.value.read())["message"]
    assert message.startswith("GET /billing-groups is not an operation")
    assert all(name in message for name in SUPPORTED_OPERATIONS)


def test_request_body_that_is_not_json_is_invalid_request(server):
    request = urllib.request.Request(server.url + "/jobs/j1", data=b"{oops", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 400
    assert "request body is not valid JSON" in json.loads(caught.value.read())["message"]


def test_list_jobs_filters_by_status_and_has_summaries(iot):
    iot.create_job(jobId="j1", targets=[ARN], document="{}")
    iot.create_job(jobId="j2", targets=[ARN], document="{}")
    iot.cancel_job(jobId="j2")
    every = iot.list_jobs()["jobs"]
    canceled = iot.list_jobs(status="CANCELED")["jobs"]
    assert [job["jobId"] for job in every] == ["j1", "j2"]
    assert [job["jobId"] for job in canceled] == ["j2"]
    assert every[0]["jobArn"] == "arn:aws:iot:us-east-1:123456789012:job/j1"
    assert every[0]["createdAt"].timestamp() == NOW
    assert iot.list_jobs(thingGroupName="group")["jobs"] == []


def test_unexpected_service_failure_is_500_internal_failure(iot, fake, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(fake, "describe_job", broken)
    with pytest.raises(ClientError) as caught:
        iot.describe_job(jobId="j1")
    assert caught.value.response["Error"]["Code"] == "InternalFailureException"


@pytest.mark.parametrize(
    "request_fields, expected",
    [
        ({"targets": ["thing-1"]}, 'targets: "thing-1" is not a thing or thing group ARN'),
        ({"targets": [thing_arn("bad name!")]}, "targets: name in"),
        ({"document": "x" * 32769}, "document: the job document is 32769 characters long"),
        ({"document": "{nope"}, "document: the job document is not valid JSON"),
        ({"document": "[1]"}, "document: the job document must be a JSON object, got list"),
        ({"document": None}, "give exactly one of document and documentSource"),
        ({"documentSource": "x.json"}, "give exactly one of document and documentSource"),
        (
            {"timeoutConfig": {"inProgressTimeoutInMinutes": 0}},
            "timeoutConfig.inProgressTimeoutInMinutes must be 1 to 10080, got 0",
        ),
        (
            {
                "jobExecutionsRetryConfig": {
                    "criteriaList": [{"failureType": "FAILED", "numberOfRetries": 11}]
                }
            },
            "jobExecutionsRetryConfig.criteriaList[0].numberOfRetries must be an integer",
        ),
        ({"targetSelection": "SOMETIMES"}, "targetSelection must be SNAPSHOT or CONTINUOUS"),
        ({"targetSelection": "CONTINUOUS"}, None),
        ({"abortConfig": {}}, "abortConfig.criteriaList must be a non-empty list"),
        ({"abortConfig": {"criteriaList": [{"x": 1}]}}, "criteriaList[0].failureType must be"),
        ({"schedulingConfig": {"startTime": "x"}}, "schedulingConfig not supported"),
        ({"description": "a\x00b"}, "description must be 1 to 2028 characters"),
    ],
)
def test_bad_create_job_input_is_invalid_request_naming_the_field(server, request_fields, expected):
    body = {"targets": [ARN], "document": "{}", **request_fields}
    body = {key: value for key, value in body.items() if value is not None}
    request = urllib.request.Request(
        server.url + "/jobs/j1", data=json.dumps(body).encode(), method="PUT"
    )
    if expected is None:
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        return
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.headers["x-amzn-ErrorType"] == "InvalidRequestException"
    assert expected in json.loads(caught.value.read())["message"]


def test_bad_job_id_in_the_path_is_invalid_request_naming_job_id(iot):
    with pytest.raises(iot.exceptions.InvalidRequestException, match="jobId 'bad id!'"):
        iot.describe_job(jobId="bad id!")


def test_bad_status_filter_is_invalid_request_listing_statuses(server):
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(server.url + "/jobs/j1/things?status=DONE", timeout=5)
    assert (
        "status 'DONE' is not one of QUEUED, IN_PROGRESS"
        in json.loads(caught.value.read())["message"]
    )


@pytest.mark.parametrize(
    "target, name",
    [
        ("arn:aws:iot:us-east-1:123456789012:thing/thing-1", "thing-1"),
        ("arn:aws:iot:eu-central-1:000000000000:thing/a:b_c-d", "a:b_c-d"),
    ],
)
def test_thing_arn_gives_thing_name(target, name):
    assert target_thing_name(target) == name


@pytest.mark.parametrize(
    "target",
    [
        "thing-1",
        "arn:aws:iot:us-east-1:123456789012:thinggroup/g",
        "arn:aws:iot:us-east-1:1234:thing/t",
        "arn:aws:iot:us-east-1:123456789012:thing/",
        42,
    ],
)
def test_target_that_is_not_a_thing_arn_is_refused_naming_it(target):
    with pytest.raises(InvalidRequestError, match="targets: "):
        target_thing_name(target)


def test_document_of_exactly_32768_characters_is_accepted():
    text = '{"k": "' + "x" * (32768 - 9) + '"}'
    assert len(text) == 32768
    assert check_document(text, "document") == text


def test_document_source_reads_an_absolute_path_a_file_url_and_a_relative_path(tmp_path):
    (tmp_path / "job.json").write_text('{"a": 1}')
    sources = [str(tmp_path / "job.json"), (tmp_path / "job.json").as_uri(), "job.json"]
    for source in [*sources, "file://job.json", "./job.json"]:
        assert read_document_source(source, tmp_path) == '{"a": 1}'


@pytest.mark.parametrize(
    "source, expected",
    [
        ("https://s3.amazonaws.com/bucket/job.json", "S3 is not reachable"),
        ("https://bucket.s3.eu-west-1.amazonaws.com/job.json", "S3 is not reachable"),
        ("s3://bucket/job.json", "S3 is not reachable"),
        ("https://example.com/job.json", "only local files can be read"),
        ("file://../escape.json", "leads outside the documents folder"),
        ("../escape.json", "leads outside the documents folder"),
        ("missing.json", "cannot read"),
        ('{"a": 1}', "holds a job document, not its location"),
    ],
)
def test_document_source_that_cannot_be_read_locally_is_refused_with_a_hint(
    tmp_path, source, expected
):
    documents = tmp_path / "documents"
    documents.mkdir()
    (tmp_path / "escape.json").write_text("{}")
    with pytest.raises(InvalidRequestError, match="documentSource") as caught:
        read_document_source(source, documents)
    assert expected in str(caught.value)


def test_relative_document_source_without_a_documents_folder_is_refused():
    with pytest.raises(InvalidRequestError, match="no documents folder configured"):
        read_document_source("job.json", None)


def test_document_source_file_with_invalid_document_names_the_file(tmp_path):
    (tmp_path / "bad.json").write_text("not json")
    with pytest.raises(InvalidRequestError, match=r"documentSource 'bad.json' \(.*bad.json\)"):
        read_document_source("bad.json", tmp_path)


def test_shutdown_closes_the_port(fake):
    server = serve(fake, "127.0.0.1", 0)
    url = server.url
    server.shutdown()
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/jobs/j1", timeout=2)
