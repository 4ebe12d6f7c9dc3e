"""The job-template operations of the control plane, and CreateJob from a template.

CreateJobTemplate, DescribeJobTemplate, ListJobTemplates, DeleteJobTemplate,
ListManagedJobTemplates and DescribeManagedJobTemplate, in botocore's shapes
(``iot/2015-05-28``). ``expand_create_job`` turns a CreateJob body naming ``jobTemplateArn``
into the body of a plain CreateJob: a managed template's document with its
``documentParameters`` filled in, or a custom template's fields under the request's own.
``control_plane.py`` routes requests here; the functions take its operations object
(``.server``, ``.service``, ``.region``) and return the response body.
"""

from __future__ import annotations

import copy
import re
from time import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from local_jobs.fleet_api import pager
from local_jobs.model import InvalidRequestError, ResourceNotFoundError
from local_jobs.templates import (
    MANAGED_TEMPLATES,
    CustomTemplate,
    TemplateStore,
    check_document_parameters,
    custom_template_arn,
    fill_parameters,
    managed_shape,
    managed_summary_shape,
    managed_template,
    parse_template_arn,
)
from local_jobs.validation import (
    MAX_DESCRIPTION_CHARS,
    check_document,
    check_in_progress_timeout,
    check_job_id,
    parse_retry_config,
)

MAX_TEMPLATE_NAME_CHARS = 64
# The CreateJobTemplate fields a template keeps and hands to CreateJob.
_JOB_FIELDS = (
    "document",
    "documentSource",
    "timeoutConfig",
    "jobExecutionsRetryConfig",
    "presignedUrlConfig",
    "jobExecutionsRolloutConfig",
    "abortConfig",
    "maintenanceWindows",
    "destinationPackageVersions",
)
_TEMPLATE_VERSION = re.compile(r"[1-9]+.[0-9]+")  # botocore ManagedTemplateVersion

Body = Dict[str, Any]


def _store(ops: Any) -> TemplateStore:
    return ops.server.templates


def _object(body: Mapping[str, Any], name: str) -> Optional[Dict[str, Any]]:
    value = body.get(name)
    if value is not None and not isinstance(value, dict):
        raise InvalidRequestError(f"{name} must be an object")
    return value


def _check_job_fields(fields: Mapping[str, Any]) -> None:
    """The checks CreateJob applies to the fields a template hands it."""
    if fields.get("document") is not None:
        check_document(fields["document"])
    timeout = _object(fields, "timeoutConfig")
    if timeout is not None:
        check_in_progress_timeout(timeout.get("inProgressTimeoutInMinutes"))
    retry = _object(fields, "jobExecutionsRetryConfig")
    if retry is not None:
        parse_retry_config(retry)


def create_job_template(
    ops: Any, params: Dict[str, str], query: Mapping[str, str], body: Body,
    unsupported: Sequence[str] = (),
) -> Body:
    """CreateJobTemplate: from ``document``, ``documentSource`` or an existing job (``jobArn``)."""
    template_id = check_job_id(params["jobTemplateId"], "jobTemplateId")
    description = body.get("description")
    if (
        not isinstance(description, str)
        or not 1 <= len(description) <= MAX_DESCRIPTION_CHARS
    ):
        raise InvalidRequestError(
            f"description is required: a string of 1 to {MAX_DESCRIPTION_CHARS} characters"
        )
    refused = [name for name in unsupported if body.get(name)]
    if refused:
        raise InvalidRequestError(
            f"job template {template_id}: {', '.join(refused)} not supported by the local "
            f"Jobs service"
        )
    sources = [name for name in ("document", "documentSource", "jobArn") if body.get(name)]
    if len(sources) != 1:
        raise InvalidRequestError("give exactly one of document, documentSource and jobArn")
    fields: Dict[str, Any] = {"description": description}
    if sources == ["jobArn"]:
        fields.update(_fields_of_job(ops, body["jobArn"]))
    for name in _JOB_FIELDS:
        if body.get(name) is not None:
            fields[name] = copy.deepcopy(body[name])
    _check_job_fields(fields)
    _store(ops).add(CustomTemplate(template_id, time(), fields))
    return {
        "jobTemplateArn": custom_template_arn(template_id, ops.region),
        "jobTemplateId": template_id,
    }


def _fields_of_job(ops: Any, arn: object) -> Dict[str, Any]:
    if not isinstance(arn, str) or ":job/" not in arn:
        raise InvalidRequestError(f"jobArn {arn!r} is not a job ARN (arn:aws:iot:...:job/ID)")
    job = ops.service.describe_job(check_job_id(arn.rsplit(":job/", 1)[1], "jobArn job id"))
    fields: Dict[str, Any] = {"document": job.document}
    if job.in_progress_timeout_minutes is not None:
        fields["timeoutConfig"] = {"inProgressTimeoutInMinutes": job.in_progress_timeout_minutes}
    if job.retry_criteria:
        fields["jobExecutionsRetryConfig"] = {
            "criteriaList": [
                {"failureType": c.failure_type.value, "numberOfRetries": c.number_of_retries}
                for c in job.retry_criteria
            ]
        }
    return fields


def _custom(ops: Any, template_id: str) -> CustomTemplate:
    template = _store(ops).get(template_id)
    if template is None:
        raise ResourceNotFoundError(f"Job template {template_id} does not exist.")
    return template


def describe_job_template(
    ops: Any, params: Dict[str, str], query: Mapping[str, str], body: Body
) -> Body:
    template_id = check_job_id(params["jobTemplateId"], "jobTemplateId")
    template = _custom(ops, template_id)
    return {
        "jobTemplateArn": custom_template_arn(template_id, ops.region),
        "jobTemplateId": template_id,
        "createdAt": template.created_at,
        **template.fields,
    }


def list_job_templates(
    ops: Any, params: Dict[str, str], query: Mapping[str, str], body: Body
) -> Body:
    templates, next_token = pager(ops).page(_store(ops).list(), query, "ListJobTemplates")
    result: Body = {
        "jobTemplates": [
            {
                "jobTemplateArn": custom_template_arn(t.template_id, ops.region),
                "jobTemplateId": t.template_id,
                "description": t.fields.get("description"),
                "createdAt": t.created_at,
            }
            for t in templates
        ]
    }
    if next_token:
        result["nextToken"] = next_token
    return result


def delete_job_template(
    ops: Any, params: Dict[str, str], query: Mapping[str, str], body: Body
) -> None:
    template_id = check_job_id(params["jobTemplateId"], "jobTemplateId")
    if not _store(ops).delete(template_id):
        raise ResourceNotFoundError(f"Job template {template_id} does not exist.")


def _template_name(value: str, where: str) -> str:
    if not 1 <= len(value) <= MAX_TEMPLATE_NAME_CHARS:
        raise InvalidRequestError(f"{where} must be 1 to {MAX_TEMPLATE_NAME_CHARS} characters")
    return value


def list_managed_job_templates(
    ops: Any, params: Dict[str, str], query: Mapping[str, str], body: Body
) -> Body:
    name = query.get("templateName")
    templates = list(MANAGED_TEMPLATES.values())
    if name is not None:
        templates = [t for t in templates if t.name == _template_name(name, "templateName")]
    chosen, next_token = pager(ops).page(templates, query, "ListManagedJobTemplates")
    result: Body = {"managedJobTemplates": [managed_summary_shape(t, ops.region) for t in chosen]}
    if next_token:
        result["nextToken"] = next_token
    return result


def describe_managed_job_template(
    ops: Any, params: Dict[str, str], query: Mapping[str, str], body: Body
) -> Body:
    name = _template_name(params["templateName"], "templateName")
    version = query.get("templateVersion")
    if version is not None and not _TEMPLATE_VERSION.match(version):
        raise InvalidRequestError(
            f"templateVersion {version[:40]!r} is not a version such as 1.0"
        )
    return managed_shape(managed_template(name, version), ops.region)


def expand_create_job(ops: Any, body: Body) -> Tuple[Body, Optional[Tuple[str, Dict[str, str]]]]:
    """A CreateJob body without ``jobTemplateArn``, and (template ARN, parameters) if it had one.

    A managed template gives the document, with ``documentParameters`` filled in; a custom
    template gives its fields, under those the request sets itself. Raises
    InvalidRequestError (bad ARN, parameters without a managed template, a document beside a
    managed template, parameter errors) or ResourceNotFoundError (no such template).
    """
    arn = body.get("jobTemplateArn")
    parameters = body.get("documentParameters")
    if arn is None:
        if parameters is not None:
            raise InvalidRequestError(
                "documentParameters can only be used with the jobTemplateArn of an AWS "
                "managed template (e.g. arn:aws:iot:us-east-1::jobtemplate/AWS-Reboot:1.0)"
            )
        return body, None
    if not isinstance(arn, str):
        raise InvalidRequestError("jobTemplateArn must be a string")
    kind, name, version = parse_template_arn(arn)
    expanded = {k: v for k, v in body.items() if k not in ("jobTemplateArn", "documentParameters")}
    if kind == "managed":
        template = managed_template(name, version)
        given = [k for k in ("document", "documentSource") if body.get(k) is not None]
        if given:
            raise InvalidRequestError(
                f"{' and '.join(given)}: a job made from the managed template {name} takes "
                f"its document from the template; leave {' and '.join(given)} out and give "
                f"documentParameters"
            )
        values = check_document_parameters(parameters if parameters is not None else {})
        expanded["document"] = fill_parameters(template, values)
        return expanded, (arn, values)
    if parameters is not None:
        raise InvalidRequestError(
            "documentParameters can only be used when creating jobs from AWS managed "
            "templates, not from the custom template " + name
        )
    template = _custom(ops, name)
    if body.get("document") is None and body.get("documentSource") is None:
        for source in ("document", "documentSource"):
            if source in template.fields:
                expanded[source] = template.fields[source]
    for field, value in template.fields.items():
        if field not in ("document", "documentSource", "description"):
            expanded.setdefault(field, copy.deepcopy(value))
    return expanded, (arn, {})


def remember_job(
    ops: Any,
    job_id: str,
    use: Optional[Tuple[str, Dict[str, str]]],
    presigned_url_config: Optional[Mapping[str, Any]],
) -> None:
    """After CreateJob: keep the template the job came from and its presignedUrlConfig."""
    _store(ops).remember_job(
        job_id, use[0] if use else None, (use[1] or None) if use else None, presigned_url_config
    )


def job_extras(ops: Any, job_id: str) -> Dict[str, Any]:
    """``jobTemplateArn``, ``documentParameters``, ``presignedUrlConfig`` for DescribeJob."""
    return _store(ops).job_extras(job_id)


def forget_job(ops: Any, job_id: str) -> None:
    """After DeleteJob."""
    _store(ops).forget_job(job_id)
