"""Job templates through boto3 and the AWS CLI: AWS's managed templates with
documentParameters, custom templates, paging, and what survives a service restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from local_jobs.control_plane import serve
from local_jobs.service import LocalJobsService
from local_jobs.store import Store
from local_jobs.templates import MANAGED_TEMPLATES, TemplateStore

AWS = str(Path(sys.executable).with_name("aws"))
T1 = "arn:aws:iot:us-east-1:123456789012:thing/t1"
REBOOT = "arn:aws:iot:us-east-1::jobtemplate/AWS-Reboot:1.0"
RESTART = "arn:aws:iot:us-east-1::jobtemplate/AWS-Restart-Application:1.0"
DOWNLOAD = "arn:aws:iot:us-east-1::jobtemplate/AWS-Download-File:1.0"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "managed"


@pytest.fixture
def iot(tmp_path):
    store = Store(tmp_path / "jobs.sqlite3")
    # t1 is a known thing (as one with a certificate is), so a registry finds it.
    service = LocalJobsService(
        store, lambda topic, body: None, run_timers=False, things=lambda: ["t1"]
    )
    templates = TemplateStore(tmp_path / "jobs.sqlite3")
    server = serve(service, templates=templates)
    yield boto3.client(
        "iot", endpoint_url=server.url, region_name="us-east-1",
        aws_access_key_id="local", aws_secret_access_key="local",
    )
    server.shutdown()
    templates.close()
    service.close()
    store.close()


def error_of(call, **kwargs):
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    return caught.value.response["Error"]["Code"], caught.value.response["Error"]["Message"]


def test_the_managed_templates_are_those_the_agent_runs(iot):
    listed = iot.list_managed_job_templates()["managedJobTemplates"]
    assert [t["templateName"] for t in listed] == sorted(MANAGED_TEMPLATES)
    assert {t["templateName"] for t in listed} == {
        "AWS-Download-File", "AWS-Install-Application", "AWS-Reboot", "AWS-Remove-Application",
        "AWS-Restart-Application", "AWS-Run-Command", "AWS-Start-Application",
        "AWS-Stop-Application",
    }
    assert listed[0]["templateArn"] == "arn:aws:iot:us-east-1::jobtemplate/AWS-Download-File:1.0"
    assert all(t["environments"] == ["LINUX"] and t["templateVersion"] == "1.0" for t in listed)


def test_describe_managed_template_gives_the_document_and_its_parameters(iot):
    template = iot.describe_managed_job_template(templateName="AWS-Download-File")
    assert json.loads(template["document"]) == {
        "version": "1.0",
        "steps": [{"action": {
            "name": "Download-File", "type": "runHandler",
            "input": {
                "handler": "download-file.sh",
                "args": ["${aws:iot:parameter:downloadUrl}", "${aws:iot:parameter:filePath}"],
                "path": "${aws:iot:parameter:pathToHandler}",
            },
            "runAsUser": "${aws:iot:parameter:runAsUser}",
        }}],
    }
    keys = {p["key"]: p["optional"] for p in template["documentParameters"]}
    assert keys == {"downloadUrl": False, "filePath": False, "runAsUser": True,
                    "pathToHandler": True}


@pytest.mark.parametrize("name", sorted(MANAGED_TEMPLATES))
def test_a_job_from_a_managed_template_gets_the_document_the_agent_examples_hold(iot, name):
    example = json.loads((EXAMPLES / f"{name}.json").read_text())
    action = example["steps"][0]["action"]
    args = action["input"].get("args", [])
    parameters = {
        "AWS-Download-File": dict(zip(("downloadUrl", "filePath"), args)),
        "AWS-Run-Command": {"command": action["input"].get("command", "")},
    }.get(name, {})
    if not parameters and action["input"].get("args"):
        key = "packages" if "packages" in action["input"]["handler"] else "services"
        parameters = {key: action["input"]["args"][0]}
    iot.create_job(
        jobId="from-template", targets=[T1],
        jobTemplateArn=f"arn:aws:iot:us-east-1::jobtemplate/{name}:1.0",
        documentParameters=parameters,
    )
    assert json.loads(iot.get_job_document(jobId="from-template")["document"]) == example
    job = iot.describe_job(jobId="from-template")["job"]
    assert job["jobTemplateArn"] == f"arn:aws:iot:us-east-1::jobtemplate/{name}:1.0"


def test_a_template_version_that_is_no_version_is_an_invalid_request(iot):
    code, message = error_of(iot.describe_managed_job_template, templateName="AWS-Reboot",
                             templateVersion="latest")
    assert code == "InvalidRequestException" and "templateVersion 'latest'" in message
    assert iot.describe_managed_job_template(
        templateName="AWS-Reboot", templateVersion="1.0")["templateVersion"] == "1.0"


def test_a_missing_required_parameter_is_refused_naming_it(iot):
    code, message = error_of(iot.create_job, jobId="j", targets=[T1], jobTemplateArn=RESTART)
    assert code == "InvalidRequestException"
    assert "AWS-Restart-Application:1.0 needs services" in message


def test_an_unknown_parameter_is_refused_naming_it(iot):
    code, message = error_of(
        iot.create_job, jobId="j", targets=[T1], jobTemplateArn=REBOOT,
        documentParameters={"delay": "5"},
    )
    assert code == "InvalidRequestException"
    assert "delay is not a parameter of AWS-Reboot:1.0" in message


@pytest.mark.parametrize(
    "kwargs, code, text",
    [
        ({"documentParameters": {"a": "b"}, "document": "{}"}, "InvalidRequestException",
         "documentParameters can only be used with the jobTemplateArn of an AWS managed"),
        ({"jobTemplateArn": "arn:aws:iot:us-east-1::jobtemplate/AWS-Nope:1.0"},
         "ResourceNotFoundException", "Managed job template AWS-Nope does not exist"),
        ({"jobTemplateArn": "arn:aws:iot:us-east-1::jobtemplate/AWS-Reboot:2.0"},
         "ResourceNotFoundException", "has no version 2.0"),
        ({"jobTemplateArn": "arn:aws:iot:us-east-1:123456789012:jobtemplate/none"},
         "ResourceNotFoundException", "Job template none does not exist."),
        ({"jobTemplateArn": "arn:aws:iot:us-east-1:123456789012:job/x"},
         "InvalidRequestException", "is not a job template ARN"),
        ({"jobTemplateArn": REBOOT, "document": "{}"}, "InvalidRequestException",
         "takes its document from the template"),
        ({"jobTemplateArn": DOWNLOAD,
          "documentParameters": {"downloadUrl": "x", "filePath": "y" * 4097}},
         "InvalidRequestException", "documentParameters.filePath does not match"),
    ],
)
def test_bad_template_requests_get_aws_errors_naming_the_field(iot, kwargs, code, text):
    assert error_of(iot.create_job, jobId="j", targets=[T1], **kwargs)[0] == code
    assert text in error_of(iot.create_job, jobId="j", targets=[T1], **kwargs)[1]


def test_a_custom_template_makes_jobs_with_its_document_and_configs(iot):
    document = json.dumps({"jobType": "APT_UPDATE", "aptPackageName": "cowsay"})
    created = iot.create_job_template(
        jobTemplateId="apt-cowsay", description="install cowsay", document=document,
        timeoutConfig={"inProgressTimeoutInMinutes": 30},
        jobExecutionsRetryConfig={"criteriaList": [{"failureType": "FAILED",
                                                    "numberOfRetries": 2}]},
    )
    arn = "arn:aws:iot:us-east-1:123456789012:jobtemplate/apt-cowsay"
    assert created["jobTemplateArn"] == arn
    described = iot.describe_job_template(jobTemplateId="apt-cowsay")
    assert described["document"] == document and described["description"] == "install cowsay"
    iot.create_job(jobId="j1", targets=[T1], jobTemplateArn=arn)
    job = iot.describe_job(jobId="j1")["job"]
    assert iot.get_job_document(jobId="j1")["document"] == document
    assert job["timeoutConfig"] == {"inProgressTimeoutInMinutes": 30}
    assert job["jobExecutionsRetryConfig"]["criteriaList"][0]["numberOfRetries"] == 2
    assert job["jobTemplateArn"] == arn
    code, message = error_of(
        iot.create_job, jobId="j2", targets=[T1], jobTemplateArn=arn,
        documentParameters={"a": "b"},
    )
    assert code == "InvalidRequestException" and "only be used when creating jobs" in message


def test_a_template_from_a_job_copies_its_document(iot):
    document = json.dumps({"jobType": "APT_UPDATE", "aptPackageName": "hello-iot"})
    iot.create_job(jobId="base", targets=[T1], document=document)
    iot.create_job_template(
        jobTemplateId="from-job", description="copy",
        jobArn="arn:aws:iot:us-east-1:123456789012:job/base",
    )
    assert iot.describe_job_template(jobTemplateId="from-job")["document"] == document


def test_custom_template_errors(iot):
    iot.create_job_template(jobTemplateId="t", description="d", document="{}")
    assert error_of(iot.create_job_template, jobTemplateId="t", description="d",
                    document="{}")[0] == "ConflictException"
    code, message = error_of(iot.create_job_template, jobTemplateId="u", description="d",
                             document="[1]")
    assert code == "InvalidRequestException" and "document: the job document must be" in message
    code, message = error_of(iot.create_job_template, jobTemplateId="u", description="d")
    assert "give exactly one of document, documentSource and jobArn" in message
    code, message = error_of(iot.create_job_template, jobTemplateId="bad.id", description="d",
                             document="{}")
    assert code == "InvalidRequestException" and "jobTemplateId 'bad.id' is invalid" in message
    assert error_of(iot.describe_job_template, jobTemplateId="gone")[0] == (
        "ResourceNotFoundException")
    iot.delete_job_template(jobTemplateId="t")
    assert error_of(iot.delete_job_template, jobTemplateId="t")[0] == "ResourceNotFoundException"


def test_list_job_templates_pages_with_next_token(iot):
    for number in range(5):
        iot.create_job_template(jobTemplateId=f"t{number}", description="d", document="{}")
    first = iot.list_job_templates(maxResults=2)
    assert [t["jobTemplateId"] for t in first["jobTemplates"]] == ["t0", "t1"]
    second = iot.list_job_templates(maxResults=2, nextToken=first["nextToken"])
    assert [t["jobTemplateId"] for t in second["jobTemplates"]] == ["t2", "t3"]
    pages = iot.get_paginator("list_job_templates").paginate(PaginationConfig={"PageSize": 2})
    assert [t["jobTemplateId"] for p in pages for t in p["jobTemplates"]] == [
        f"t{n}" for n in range(5)
    ]
    assert error_of(iot.list_job_templates, nextToken="garbage")[0] == "InvalidRequestException"
    assert error_of(iot.list_job_templates, maxResults=251)[0] == "InvalidRequestException"


def test_templates_survive_a_service_restart_and_work_from_the_aws_cli(stack, tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="t", AWS_SECRET_ACCESS_KEY="t", AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=str(tmp_path / "none"), HOME=str(tmp_path), AWS_PAGER="")

    def aws(*args):
        result = subprocess.run(
            [AWS, "iot", *args, "--endpoint-url", stack.control_url, "--output", "json"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout) if result.stdout.strip() else None

    aws("create-job-template", "--job-template-id", "keep", "--description", "kept",
        "--document", '{"jobType": "APT_UPDATE", "aptPackageName": "cowsay"}')
    arn = stack.thing("thing-1").arn
    aws("create-job", "--job-id", "reboot-1", "--targets", arn,
        "--job-template-arn", REBOOT, "--document-parameters", "pathToHandler=/opt/h")
    stack.restart_service()
    assert aws("describe-job-template", "--job-template-id", "keep")["description"] == "kept"
    job = aws("describe-job", "--job-id", "reboot-1")["job"]
    assert job["jobTemplateArn"] == REBOOT
    assert job["documentParameters"] == {"pathToHandler": "/opt/h"}
    names = [t["templateName"] for t in aws("list-managed-job-templates")["managedJobTemplates"]]
    assert "AWS-Reboot" in names
