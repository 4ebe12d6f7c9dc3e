"""Job documents from S3 and presigned-URL placeholders, against the local S3 (moto's server)
that LocalStack(s3=True) and ./localjobs up run, driven by the AWS CLI and boto3."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from agent_core_fixtures import InProcessAgent, wait_status
from botocore.exceptions import ClientError
from stack_helpers import set_settings

from agent.managed import register_managed_handlers

AWS = str(Path(sys.executable).with_name("aws"))
PLACEHOLDER = "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/firmware/app-1.2.bin}"


@pytest.fixture
def stack(stack_factory):
    return stack_factory(s3=True)


def test_aws_s3_cp_then_create_job_document_source_reads_the_object(stack, tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="t", AWS_SECRET_ACCESS_KEY="t", AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=str(tmp_path / "none"), HOME=str(tmp_path), AWS_PAGER="",
               AWS_CA_BUNDLE=str(stack.ca_path))
    document = {"jobType": "APT_UPDATE", "aptPackageName": "cowsay"}
    (tmp_path / "job.json").write_text(json.dumps(document))

    def aws(*args):
        result = subprocess.run([AWS, *args], env=env, cwd=tmp_path, capture_output=True,
                                text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout

    aws("s3", "mb", "s3://jobs", "--endpoint-url", stack.s3_url)
    aws("s3", "cp", "job.json", "s3://jobs/job.json", "--endpoint-url", stack.s3_url)
    aws("iot", "create-job", "--endpoint-url", stack.control_url, "--job-id", "from-s3",
        "--targets", stack.thing("thing-1").arn,
        "--document-source", "https://jobs.s3.us-east-1.amazonaws.com/job.json")
    got = json.loads(aws("iot", "get-job-document", "--endpoint-url", stack.control_url,
                         "--job-id", "from-s3"))
    assert json.loads(got["document"]) == document


def test_a_missing_object_is_refused_saying_how_to_upload_it(stack):
    with pytest.raises(ClientError) as caught:
        stack.iot_client().create_job(
            jobId="x", targets=[stack.thing("thing-1").arn], documentSource="s3://none/job.json"
        )
    error = caught.value.response["Error"]
    assert error["Code"] == "InvalidRequestException"
    assert "aws s3 cp job.json s3://none/job.json --endpoint-url" in error["Message"]


def test_each_delivery_carries_a_fresh_presigned_url_that_downloads_the_object(stack):
    s3 = stack.s3_client()
    s3.create_bucket(Bucket="firmware")
    s3.put_object(Bucket="firmware", Key="app-1.2.bin", Body=b"firmware bytes")
    document = {"version": "1.0", "steps": [{"action": {
        "name": "Download-File", "type": "runHandler",
        "input": {"handler": "download-file.sh", "args": [PLACEHOLDER, "app.bin"], "path": ""},
        "runAsUser": "",
    }}]}
    iot = stack.iot_client()
    iot.create_job(jobId="dl", targets=[stack.thing("thing-1").arn],
                   document=json.dumps(document),
                   presignedUrlConfig={"expiresInSec": 300,
                                       "roleArn": "arn:aws:iam::123456789012:role/local"})
    assert PLACEHOLDER in iot.get_job_document(jobId="dl")["document"]
    assert iot.describe_job(jobId="dl")["job"]["presignedUrlConfig"]["expiresInSec"] == 300
    device = stack.jobs_data_client("thing-1")
    delivered = json.loads(
        device.describe_job_execution(thingName="thing-1", jobId="dl")["execution"]["jobDocument"]
    )
    url = delivered["steps"][0]["action"]["input"]["args"][0]
    assert url.startswith(stack.s3_url + "/firmware/app-1.2.bin?")
    assert "X-Amz-Expires=300" in url
    context = ssl.create_default_context(cafile=str(stack.ca_path))
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        assert response.read() == b"firmware bytes"
    stack.restart_service()
    again = json.loads(
        device.describe_job_execution(thingName="thing-1", jobId="dl")["execution"]["jobDocument"]
    )
    assert again["steps"][0]["action"]["input"]["args"][0].startswith(stack.s3_url)


def test_without_the_local_s3_s3_sources_and_presigned_urls_are_refused_clearly(stack_factory):
    plain = stack_factory()
    iot = plain.iot_client()
    for kwargs, text in [
        ({"documentSource": "s3://b/job.json"}, "runs without its local S3 (./localjobs up"),
        ({"document": "{}", "presignedUrlConfig": {"expiresInSec": 60}},
         "presigned URLs need the local S3"),
    ]:
        with pytest.raises(ClientError) as caught:
            iot.create_job(jobId="x", targets=[plain.thing("thing-1").arn], **kwargs)
        assert text in caught.value.response["Error"]["Message"]


def test_the_agent_downloads_a_presigned_s3_object_from_a_managed_template_job(
    stack, tmp_path
):
    s3 = stack.s3_client()
    s3.create_bucket(Bucket="firmware")
    body = os.urandom(100_000)
    s3.put_object(Bucket="firmware", Key="app-1.2.bin", Body=body)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    set_settings(stack.thing("thing-1").settings_path, "download", directory=downloads,
                 ca_file=stack.ca_path, retry_delay_seconds="0.05")
    agent = InProcessAgent(stack)
    register_managed_handlers(agent.client, agent.settings)
    agent.start()
    try:
        stack.iot_client().create_job(
            jobId="fw-1", targets=[stack.thing("thing-1").arn],
            jobTemplateArn="arn:aws:iot:us-east-1::jobtemplate/AWS-Download-File:1.0",
            documentParameters={"downloadUrl": PLACEHOLDER, "filePath": "fw/app.bin"},
            presignedUrlConfig={"expiresInSec": 600},
        )
        found = wait_status(stack, "fw-1", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=30)
    finally:
        agent.stop()
    assert found["status"] == "SUCCEEDED", found
    assert (downloads / "fw" / "app.bin").read_bytes() == body
