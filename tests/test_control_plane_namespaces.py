"""Job namespaces end to end: a job created with namespaceId lives in a queue of its own on
each thing, reached only through the namespaced device topics the Greengrass nucleus uses
(``$aws/things/T/jobs/$next/namespace-NS/get``, ``.../<jobId>/namespace-NS/update``,
``notify-namespace-NS``, ``notify-next-namespace-NS``); default jobs stay on the plain ones."""

from __future__ import annotations

import json
import uuid
from typing import Iterator

import pytest
from botocore.exceptions import ClientError

from local_jobs.model import thing_arn
from local_jobs.stack import LocalStack
from tests.local_jobs_fixtures import RawDevice

GG = "aws-gg-deployment"
NS = f"namespace-{GG}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("stack"), things=["core-1"]) as stack:
        yield stack


@pytest.fixture
def device(stack) -> Iterator[RawDevice]:
    device = RawDevice(stack, "core-1")
    yield device
    device.close()


def create(stack, job_id: str, namespace=None) -> None:
    fields = {"namespaceId": namespace} if namespace else {}
    stack.iot_client().create_job(
        jobId=job_id,
        targets=[thing_arn("core-1")],
        document=json.dumps({"jobType": "TEST", "id": job_id}),
        **fields,
    )


def test_namespaced_job_is_seen_only_on_namespaced_topics(stack, device):
    deployment, own = "gg-" + uuid.uuid4().hex[:8], "own-" + uuid.uuid4().hex[:8]
    create(stack, deployment, GG)
    assert device.wait_topic(f"notify-next-{NS}")["execution"]["jobId"] == deployment
    assert device.wait_topic(f"notify-{NS}")["jobs"]["QUEUED"][0]["jobId"] == deployment
    create(stack, own)
    assert device.wait_topic("notify-next")["execution"]["jobId"] == own
    # Each queue's $next is its own job, and the default lists never show the deployment.
    suffix, body = device.request(f"$next/{NS}/get")
    assert (suffix, body["execution"]["jobId"]) == (f"$next/{NS}/get/accepted", deployment)
    suffix, body = device.request("get")
    assert [j["jobId"] for j in body["queuedJobs"]] == [own]
    suffix, body = device.request("start-next")
    assert body["execution"]["jobId"] == own
    # The deployment is updated on its namespaced topic only.
    suffix, body = device.request(f"{deployment}/update", {"status": "IN_PROGRESS"})
    assert (suffix, body["code"]) == (f"{deployment}/update/rejected", "ResourceNotFound")
    suffix, _ = device.request(f"{deployment}/{NS}/update", {"status": "SUCCEEDED"})
    assert suffix == f"{deployment}/{NS}/update/accepted"
    assert device.wait_topic(f"notify-next-{NS}") == {"timestamp": pytest.approx(0, abs=2e9)}
    suffix, _ = device.request(f"{own}/update", {"status": "SUCCEEDED"})
    assert suffix == f"{own}/update/accepted"
    assert "execution" not in device.wait_topic("notify-next")


def test_a_default_job_in_progress_does_not_hold_back_the_namespaced_head(stack, device):
    own, deployment = "own-" + uuid.uuid4().hex[:8], "gg-" + uuid.uuid4().hex[:8]
    create(stack, own)
    device.request("start-next")
    device.drain()
    create(stack, deployment, GG)
    # Its own queue's head changed: notify-next for the namespace, nothing on the default one.
    assert device.wait_topic(f"notify-next-{NS}")["execution"]["jobId"] == deployment
    seen = [suffix for suffix, _ in device.drain()]
    assert "notify" not in seen and "notify-next" not in seen
    device.request(f"{own}/update", {"status": "SUCCEEDED"})
    device.request(f"{deployment}/{NS}/update", {"status": "SUCCEEDED"})


def test_control_plane_lists_and_filters_by_namespace(stack):
    iot = stack.iot_client()
    deployment = "gg-" + uuid.uuid4().hex[:8]
    create(stack, deployment, GG)
    job = iot.describe_job(jobId=deployment)["job"]
    assert job["namespaceId"] == GG
    assert [j["jobId"] for j in iot.list_jobs(namespaceId=GG)["jobs"]].count(deployment) == 1
    listed = iot.list_job_executions_for_thing(thingName="core-1", namespaceId=GG)
    assert deployment in [s["jobId"] for s in listed["executionSummaries"]]
    default = iot.list_job_executions_for_thing(thingName="core-1")["executionSummaries"]
    assert deployment not in [s["jobId"] for s in default]
    with pytest.raises(ClientError) as caught:
        iot.create_job(
            jobId="bad-ns", targets=[thing_arn("core-1")], document="{}", namespaceId="a b"
        )
    assert caught.value.response["Error"]["Code"] == "InvalidRequestException"
    assert "namespaceId" in caught.value.response["Error"]["Message"]
    iot.cancel_job(jobId=deployment)
