"""The control plane of the local Jobs service: AWS IoT's REST API for jobs, over HTTP.

boto3's ``iot`` client (``endpoint_url=``) and the AWS CLI (``--endpoint-url``) talk to it
unchanged. Routes, request fields and response shapes follow botocore's model of the service
(``botocore/data/iot/2015-05-28/service-2.json``, protocol ``rest-json``): path and query
parameters, a JSON body, timestamps as epoch seconds, and errors as the ``x-amzn-ErrorType``
header plus a JSON ``{"message": ...}`` body. Any SigV4 signature is accepted: it is local.

Every operation is a call on a ``JobsService`` (``model.py``); this module only converts HTTP
to those calls and their results back to the AWS shapes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from time import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from local_jobs import fleet_api, job_options, template_api
from local_jobs.http_json import BackgroundHTTPServer, JsonRequestHandler
from local_jobs.job_options import _without_none
from local_jobs.model import (
    DEFAULT_REGION,
    MAX_JOB_DOCUMENT_CHARS,
    THING_NAME_PATTERN,
    ExecutionStatus,
    InvalidRequestError,
    Job,
    JobExecution,
    JobsService,
    JobStatus,
    RetryCriterion,
    ServiceError,
    job_arn,
    thing_arn,
)
from local_jobs.registry import check_tags
from local_jobs.s3 import LocalS3, s3_location
from local_jobs.templates import TemplateStore
from local_jobs.validation import (
    MAX_COMMENT_CHARS,
    MAX_DESCRIPTION_CHARS,
    MAX_DOCUMENT_SOURCE_CHARS,
    REASON_CODE_PATTERN,
    check_document,
    check_in_progress_timeout,
    check_job_id,
    check_presigned_url_config,
    check_thing_name,
    parse_retry_config,
)

log = logging.getLogger(__name__)

# ``arn:aws:iot:REGION:ACCOUNT:thing/NAME``; any region and account are accepted.
THING_ARN_PATTERN = re.compile(r"arn:aws[a-z-]*:iot:[a-z0-9-]+:[0-9]{12}:thing/(?P<name>.+)")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")

# CreateJob fields with no local meaning. Refused rather than ignored, so that nobody believes
# a schedule is being honoured when it is not.
_UNSUPPORTED_CREATE_FIELDS = (
    "schedulingConfig",
    "destinationPackageVersions",
)

Body = Dict[str, Any]
Query = Dict[str, str]
Response = Optional[Dict[str, Any]]


class UnknownOperationError(ServiceError, LookupError):
    """The method and path name no operation the local control plane serves."""

    http_status = 404
    aws_type = "UnknownOperationException"


class ControlPlaneServer(BackgroundHTTPServer):
    """The HTTP server ``serve`` returns; ``shutdown()`` stops it and closes its socket."""

    daemon_threads = True
    thread_name = "control-plane"

    def __init__(
        self,
        address: Tuple[str, int],
        service: JobsService,
        *,
        documents_dir: Optional[Path],
        region: str,
        templates: Optional[TemplateStore] = None,
        s3: Optional[LocalS3] = None,
    ) -> None:
        super().__init__(address, _RequestHandler)
        self.service = service
        # Custom job templates; in memory unless the process hands over its database's.
        self.templates = templates if templates is not None else TemplateStore()
        # The local S3 (documentSource s3:// and presigned URLs), when one runs.
        self.s3 = s3
        self.documents_dir = documents_dir
        self.region = region
        # DescribeJob echoes the documentSource a job was made from; JobsService keeps no
        # such field, so it lives here (and is forgotten when the control plane restarts).
        self._document_sources: Dict[str, str] = {}
        self._document_sources_lock = threading.Lock()

    @property
    def url(self) -> str:
        """The endpoint URL to hand to boto3 (``endpoint_url``) or the CLI (``--endpoint-url``)."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def remember_document_source(self, job_id: str, source: Optional[str]) -> None:
        with self._document_sources_lock:
            if source is None:
                self._document_sources.pop(job_id, None)
            else:
                self._document_sources[job_id] = source

    def document_source(self, job_id: str) -> Optional[str]:
        with self._document_sources_lock:
            return self._document_sources.get(job_id)


def serve(
    service: JobsService,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    documents_dir: Union[str, os.PathLike[str], None] = None,
    region: str = DEFAULT_REGION,
    templates: Optional[TemplateStore] = None,
    s3: Optional[LocalS3] = None,
) -> ControlPlaneServer:
    """Start the control plane on ``host:port`` (0 = a free port) in a daemon thread.

    ``documents_dir`` is where a relative CreateJob ``documentSource`` is looked up;
    ``templates`` keeps the custom job templates (in memory when not given). The
    returned server has ``.server_address``, ``.url`` and ``.shutdown()``. Raises OSError
    when the address cannot be bound.
    """
    server = ControlPlaneServer(
        (host, port),
        service,
        documents_dir=Path(documents_dir).resolve() if documents_dir is not None else None,
        region=region,
        templates=templates,
        s3=s3,
    )
    server.start()
    log.info("control plane listening on %s", server.url)
    return server


# --------------------------------------------------------------------------- request checks


def _invalid(message: str) -> InvalidRequestError:
    return InvalidRequestError(message)


def _job_id(value: str) -> str:
    return check_job_id(value)


def _thing_name(value: str) -> str:
    return check_thing_name(value)


def _field(body: Body, name: str, kind: type, kind_name: str, *, where: str = "") -> Any:
    """``body[name]`` if present and of ``kind`` (bool is not an int here), else None."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _invalid(f"{where}{name} must be {kind_name}, got {json.dumps(value)[:80]}")
    return value


def _text(body: Body, name: str, limit: int) -> Optional[str]:
    value = _field(body, name, str, "a string")
    if value is None:
        return None
    if not value or len(value) > limit or _CONTROL_CHARACTERS.search(value):
        raise _invalid(f"{name} must be 1 to {limit} characters without control characters")
    return value


def _flag(query: Query, name: str) -> bool:
    value = query.get(name, "false").lower()
    if value not in ("true", "false"):
        raise _invalid(f"{name} must be true or false, got {query[name]!r}")
    return value == "true"


def _status_filter(query: Query) -> Optional[ExecutionStatus]:
    value = query.get("status")
    if value is None:
        return None
    try:
        return ExecutionStatus(value)
    except ValueError:
        choices = ", ".join(s.value for s in ExecutionStatus)
        raise _invalid(f"status {value!r} is not one of {choices}") from None


def target_thing_name(target: Any) -> str:
    """The thing name in a CreateJob target, which must be a thing ARN.

    Raises InvalidRequestError naming the target otherwise.
    """
    match = THING_ARN_PATTERN.fullmatch(target) if isinstance(target, str) else None
    if match is None:
        raise _invalid(
            f"targets: {json.dumps(target)[:200]} is not a thing ARN "
            f"(expected arn:aws:iot:REGION:ACCOUNT:thing/THING_NAME; thing groups are not "
            f"supported locally)"
        )
    name = match.group("name")
    if not THING_NAME_PATTERN.fullmatch(name):
        raise _invalid(f"targets: {target!r} names an invalid thing name {name!r}")
    return name


_LOCAL_SOURCE_HINT = (
    "give the document inline instead (aws iot create-job --document file://job.json), or "
    "name a local file as documentSource: an absolute path, a file:// URL, or a path under "
    "the documents folder"
)


def read_document_source(
    source: str, documents_dir: Optional[Path], s3: Optional[LocalS3] = None
) -> str:
    """The job document that a CreateJob ``documentSource`` names on this machine.

    Accepts an S3 object URL when ``s3`` (the local S3) is given, an absolute path, a
    ``file://`` URL, or a path relative to ``documents_dir``. Raises InvalidRequestError for
    other remote URLs, missing or unreadable objects and files, paths outside
    ``documents_dir`` and invalid documents, naming the source.
    """
    if len(source) > MAX_DOCUMENT_SOURCE_CHARS:
        raise _invalid(f"documentSource is longer than {MAX_DOCUMENT_SOURCE_CHARS} characters")
    if source.lstrip().startswith(("{", "[")):
        raise _invalid(
            "documentSource holds a job document, not its location: pass the document as "
            "document (aws iot create-job --document file://job.json)"
        )
    parts = urllib.parse.urlsplit(source)
    scheme = parts.scheme.lower()
    if s3 is not None and s3_location(source) is not None:
        text = s3.read_document(source, MAX_JOB_DOCUMENT_CHARS)
        if len(text) > MAX_JOB_DOCUMENT_CHARS:
            raise _invalid(
                f"documentSource {source!r} is longer than the {MAX_JOB_DOCUMENT_CHARS}-character"
                f" job document limit"
            )
        return check_document(text, f"documentSource {source!r}")
    if scheme == "s3" or (scheme in ("http", "https") and ".amazonaws.com" in parts.netloc):
        raise _invalid(
            f"documentSource {source!r}: S3 is not reachable: this local Jobs service runs "
            f"without its local S3 "
            f"(./localjobs up starts one: s3_url in endpoints.json); {_LOCAL_SOURCE_HINT}"
        )
    if scheme == "file":
        # The CLI sends --document-source verbatim (awscli PARAMFILE_DISABLED), and people
        # write file://job.json meaning a relative path, not a host: read it as one.
        if parts.netloc in ("", "localhost"):
            path = Path(urllib.request.url2pathname(parts.path))
        else:
            path = Path(urllib.request.url2pathname(parts.netloc + parts.path))
    elif len(scheme) > 1:  # one letter would be a Windows drive
        raise _invalid(
            f"documentSource {source!r}: only local files can be read; {_LOCAL_SOURCE_HINT}"
        )
    else:
        path = Path(source)
    if not path.is_absolute():
        if documents_dir is None:
            raise _invalid(
                f"documentSource {source!r} is a relative path and the local Jobs service has "
                f"no documents folder configured (nor knows the client's working directory): "
                f"give an absolute path, e.g. file:///path/to/job.json"
            )
        path = (documents_dir / path).resolve()
        if documents_dir != path and documents_dir not in path.parents:
            raise _invalid(
                f"documentSource {source!r} leads outside the documents folder {documents_dir}"
            )
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read(MAX_JOB_DOCUMENT_CHARS + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise _invalid(f"documentSource {source!r}: cannot read {path}: {exc}") from None
    if len(text) > MAX_JOB_DOCUMENT_CHARS:
        raise _invalid(
            f"documentSource {source!r}: {path} is longer than the "
            f"{MAX_JOB_DOCUMENT_CHARS}-character job document limit"
        )
    return check_document(text, f"documentSource {source!r} ({path})")


def _in_progress_timeout(body: Body) -> Optional[int]:
    config = _field(body, "timeoutConfig", dict, "an object")
    if config is None:
        return None
    minutes = _field(
        config, "inProgressTimeoutInMinutes", int, "an integer", where="timeoutConfig."
    )
    return check_in_progress_timeout(minutes)


def _retry_criteria(body: Body) -> List[RetryCriterion]:
    config = _field(body, "jobExecutionsRetryConfig", dict, "an object")
    if config is None:
        return []
    return parse_retry_config(config)


# --------------------------------------------------------------------------- response shapes


_PROCESS_COUNT_KEYS = {
    ExecutionStatus.CANCELED: "numberOfCanceledThings",
    ExecutionStatus.SUCCEEDED: "numberOfSucceededThings",
    ExecutionStatus.FAILED: "numberOfFailedThings",
    ExecutionStatus.REJECTED: "numberOfRejectedThings",
    ExecutionStatus.QUEUED: "numberOfQueuedThings",
    ExecutionStatus.IN_PROGRESS: "numberOfInProgressThings",
    ExecutionStatus.REMOVED: "numberOfRemovedThings",
    ExecutionStatus.TIMED_OUT: "numberOfTimedOutThings",
}


def job_reference_shape(job: Job, region: str) -> Dict[str, Any]:
    """What CreateJob and CancelJob return: ``jobArn``, ``jobId`` and ``description``."""
    return _without_none(
        {"jobArn": job_arn(job.job_id, region), "jobId": job.job_id, "description": job.description}
    )


def job_summary_shape(job: Job, region: str, rolling_out: bool = False) -> Dict[str, Any]:
    """A ``JobSummary`` as ListJobs carries it."""
    return _without_none(
        {
            "jobArn": job_arn(job.job_id, region),
            "jobId": job.job_id,
            "status": job.status.value,
            "createdAt": job.created_at,
            "lastUpdatedAt": job.last_updated_at,
            "completedAt": job.completed_at,
            **job_options.job_fleet_shape(job, rolling_out, summary=True),
        }
    )


def job_shape(
    job: Job, counts: Mapping[ExecutionStatus, int], region: str, rolling_out: bool = False
) -> Dict[str, Any]:
    """DescribeJob's ``job`` structure."""
    timeout = _without_none({"inProgressTimeoutInMinutes": job.in_progress_timeout_minutes})
    shape = _without_none(
        {
            "jobArn": job_arn(job.job_id, region),
            "jobId": job.job_id,
            "status": job.status.value,
            "forceCanceled": job.force_canceled,
            "reasonCode": job.reason_code,
            "comment": job.comment,
            "targets": job_options.job_targets_shape(job, region),
            "description": job.description,
            "createdAt": job.created_at,
            "lastUpdatedAt": job.last_updated_at,
            "completedAt": job.completed_at,
            "jobProcessDetails": {
                key: counts.get(status, 0) for status, key in _PROCESS_COUNT_KEYS.items()
            },
            "timeoutConfig": timeout,
            **job_options.job_fleet_shape(job, rolling_out),
        }
    )
    if job.retry_criteria:
        shape["jobExecutionsRetryConfig"] = {
            "criteriaList": [
                {"failureType": c.failure_type.value, "numberOfRetries": c.number_of_retries}
                for c in job.retry_criteria
            ]
        }
    return shape


def execution_shape(execution: JobExecution, region: str, now: float) -> Dict[str, Any]:
    """DescribeJobExecution's ``execution`` structure."""
    return _without_none(
        {
            "jobId": execution.job_id,
            "status": execution.status.value,
            "forceCanceled": execution.force_canceled,
            "statusDetails": {"detailsMap": dict(execution.status_details)},
            "thingArn": thing_arn(execution.thing_name, region),
            "queuedAt": execution.queued_at,
            "startedAt": execution.started_at,
            "lastUpdatedAt": execution.last_updated_at,
            "executionNumber": execution.execution_number,
            "versionNumber": execution.version_number,
            "approximateSecondsBeforeTimedOut": execution.approximate_seconds_before_timed_out(now),
        }
    )


def execution_summary_shape(execution: JobExecution) -> Dict[str, Any]:
    """A ``JobExecutionSummary`` as both list operations carry it."""
    return _without_none(
        {
            "status": execution.status.value,
            "queuedAt": execution.queued_at,
            "startedAt": execution.started_at,
            "lastUpdatedAt": execution.last_updated_at,
            "executionNumber": execution.execution_number,
            "retryAttempt": execution.retry_attempt,
        }
    )


# --------------------------------------------------------------------------- operations


class _Operations:
    """One method per operation: ``(path parameters, query, body) -> response body``."""

    def __init__(self, server: ControlPlaneServer) -> None:
        self.server = server
        self.service = server.service
        self.region = server.region

    def create_job(self, params: Dict[str, str], query: Query, body: Body) -> Response:
        job_id = _job_id(params["jobId"])
        body, template_use = template_api.expand_create_job(self, body)
        unsupported = [name for name in _UNSUPPORTED_CREATE_FIELDS if body.get(name)]
        if unsupported:
            raise _invalid(
                f"job {job_id}: {', '.join(unsupported)} not supported by the local Jobs service"
            )
        registry = getattr(self.service, "registry", None)
        options = job_options.create_job_options(body, registry)
        names = options.pop("targets")
        tags = check_tags(body["tags"]) if body.get("tags") is not None else {}
        document = _field(body, "document", str, "a string")
        source = _field(body, "documentSource", str, "a string")
        if (document is None) == (source is None):
            raise _invalid("give exactly one of document and documentSource")
        if source is not None:
            document = read_document_source(source, self.server.documents_dir, self.server.s3)
        else:
            check_document(document, "document")
        presigned = _field(body, "presignedUrlConfig", dict, "an object")
        if presigned is not None:
            if self.server.s3 is None:
                raise _invalid(
                    "presignedUrlConfig: presigned URLs need the local S3, which this local Jobs "
                    "service runs without (./localjobs up starts one: s3_url in endpoints.json)"
                )
            presigned = check_presigned_url_config(presigned)
        job = self.service.create_job(
            job_id,
            names,
            document,
            description=_text(body, "description", MAX_DESCRIPTION_CHARS),
            in_progress_timeout_minutes=_in_progress_timeout(body),
            retry_criteria=_retry_criteria(body),
            **options,
        )
        if tags and registry is not None:
            registry.tag(job_arn(job_id), tags)
        self.server.remember_document_source(job_id, source)
        template_api.remember_job(self, job_id, template_use, presigned)
        log.info("job %s: created for %s", job_id, ", ".join([*names, *job.target_groups]))
        return job_reference_shape(job, self.region)

    def describe_job(self, params: Dict[str, str], query: Query, body: Body) -> Response:
        job_id = _job_id(params["jobId"])
        job = self.service.describe_job(job_id)
        counts = self.service.job_process_counts(job_id)
        return _without_none(
            {
                "documentSource": self.server.document_source(job_id),
                "job": {
                    **job_shape(job, counts, self.region, self._rolling_out(job_id)),
                    **template_api.job_extras(self, job_id),
                },
            }
        )

    def _rolling_out(self, job_id: str) -> bool:
        store = getattr(self.service, "store", None)
        return bool(store.planned_count(job_id)) if store is not None else False

    def list_jobs(self, params: Dict[str, str], query: Query, body: Body) -> Response:
        status = query.get("status")
        if status is not None and status not in {s.value for s in JobStatus}:
            choices = ", ".join(s.value for s in JobStatus)
            raise _invalid(f"status {status!r} is not one of {choices}")
        jobs = job_options.jobs_matching(
            [j for j in self.service.list_jobs() if status is None or j.status.value == status],
            query,
            getattr(self.service, "registry", None),
        )
        page, token = fleet_api.pager(self).page(jobs, query, "ListJobs")
        shapes = [job_summary_shape(j, self.region, self._rolling_out(j.job_id)) for j in page]
        return _without_none({"jobs": shapes, "nextToken": token})

    def get_job_document(self, params: Dict[str, str], query: Query, body: Body) -> Response:
        return {"document": self.service.describe_job(_job_id(params["jobId"])).document}

    def cancel_job(self, params: Dict[str, str], query: Query, body: Body) -> Response:
        job_id = _job_id(params["jobId"])
        reason_code = _field(body, "reasonCode", str, "a string")
        if reason_code is not None and not REASON_CODE_PATTERN.fullmatch(reason_code):
            raise _invalid(
                f"reasonCode {reason_code!r} must be 1 to 128 characters from A-Z, 0-9 and _"
            )
        force = _flag(query, "force")
        job = self.service.cancel_job(
            job_id,
            force=force,
            reason_code=reason_code,
            comment=_text(body, "comment", MAX_COMMENT_CHARS),
        )
        log.info("job %s: canceled%s", job_id, " with force" if force else "")
        return job_reference_shape(job, self.region)

    def delete_job(self, params: Dict[str, str], query: Query, body: Body) -> Response:
        job_id = _job_id(params["jobId"])
        force = _flag(query, "force")
        self.service.delete_job(job_id, force=force)
        self.server.remember_document_source(job_id, None)
        template_api.forget_job(self, job_id)
        log.info("job %s: deleted%s", job_id, " with force" if force else "")
        return None

    def describe_job_execution(self, params: Dict[str, str], query: Query, body: Body) -> Response:
        job_id = _job_id(params["jobId"])
        thing_name = _thing_name(params["thingName"])
        execution_number = None
        if "executionNumber" in query:
            try:
                execution_number = int(query["executionNumber"])
            except ValueError:
                raise _invalid(
                    f"executionNumber must be an integer, got {query['executionNumber']!r}"
                ) from None
        execution = self.service.describe_job_execution(job_id, thing_name, execution_number)
        return {"execution": execution_shape(execution, self.region, time())}

    def list_job_executions_for_job(
        self, params: Dict[str, str], query: Query, body: Body
    ) -> Response:
        job_id = _job_id(params["jobId"])
        executions = self.service.list_job_executions_for_job(job_id, _status_filter(query))
        page, token = fleet_api.pager(self).page(executions, query, f"ListJobExecutions {job_id}")
        summaries = [
            {
                "thingArn": thing_arn(execution.thing_name, self.region),
                "jobExecutionSummary": execution_summary_shape(execution),
            }
            for execution in page
        ]
        return _without_none({"executionSummaries": summaries, "nextToken": token})

    def list_job_executions_for_thing(
        self, params: Dict[str, str], query: Query, body: Body
    ) -> Response:
        thing_name = _thing_name(params["thingName"])
        job_id = _job_id(query["jobId"]) if "jobId" in query else None
        namespace = job_options.namespace_id(query.get("namespaceId")) or ""
        executions = [
            e
            for e in self.service.list_job_executions_for_thing(thing_name, _status_filter(query))
            if (job_id is None or e.job_id == job_id) and getattr(e, "namespace", "") == namespace
        ]
        page, token = fleet_api.pager(self).page(executions, query, f"ListForThing {thing_name}")
        summaries = [
            {"jobId": execution.job_id, "jobExecutionSummary": execution_summary_shape(execution)}
            for execution in page
        ]
        return _without_none({"executionSummaries": summaries, "nextToken": token})

    def cancel_job_execution(self, params: Dict[str, str], query: Query, body: Body) -> Response:
        job_id = _job_id(params["jobId"])
        thing_name = _thing_name(params["thingName"])
        details = _field(body, "statusDetails", dict, "an object of strings")
        if details is not None and not all(isinstance(v, str) for v in details.values()):
            raise _invalid("statusDetails values must be strings")
        force = _flag(query, "force")
        self.service.cancel_job_execution(
            job_id,
            thing_name,
            force=force,
            expected_version=_field(body, "expectedVersion", int, "an integer"),
            status_details=details,
        )
        log.info(
            "job %s: execution on %s canceled%s", job_id, thing_name, " with force" if force else ""
        )
        return None

    def create_job_template(self, params: Dict[str, str], query: Query, body: Body) -> Response:
        return template_api.create_job_template(
            self, params, query, body, unsupported=_UNSUPPORTED_CREATE_FIELDS
        )


Handler = Callable[[_Operations, Dict[str, str], Query, Body], Response]

# (method, path pattern, operation name, handler); path parameters are named groups.
_SEGMENT = r"[^/]+"
_ROUTES: List[Tuple[str, re.Pattern[str], str, Handler]] = [
    (method, re.compile(pattern.format(s=_SEGMENT)), name, handler)
    for method, pattern, name, handler in [
        ("GET", r"/jobs", "ListJobs", _Operations.list_jobs),
        ("PUT", r"/jobs/(?P<jobId>{s})", "CreateJob", _Operations.create_job),
        ("GET", r"/jobs/(?P<jobId>{s})", "DescribeJob", _Operations.describe_job),
        ("DELETE", r"/jobs/(?P<jobId>{s})", "DeleteJob", _Operations.delete_job),
        ("PUT", r"/jobs/(?P<jobId>{s})/cancel", "CancelJob", _Operations.cancel_job),
        (
            "GET",
            r"/jobs/(?P<jobId>{s})/job-document",
            "GetJobDocument",
            _Operations.get_job_document,
        ),
        (
            "GET",
            r"/jobs/(?P<jobId>{s})/things",
            "ListJobExecutionsForJob",
            _Operations.list_job_executions_for_job,
        ),
        (
            "GET",
            r"/things/(?P<thingName>{s})/jobs",
            "ListJobExecutionsForThing",
            _Operations.list_job_executions_for_thing,
        ),
        (
            "GET",
            r"/things/(?P<thingName>{s})/jobs/(?P<jobId>{s})",
            "DescribeJobExecution",
            _Operations.describe_job_execution,
        ),
        (
            "PUT",
            r"/things/(?P<thingName>{s})/jobs/(?P<jobId>{s})/cancel",
            "CancelJobExecution",
            _Operations.cancel_job_execution,
        ),
        ("GET", r"/job-templates", "ListJobTemplates", template_api.list_job_templates),
        (
            "PUT",
            r"/job-templates/(?P<jobTemplateId>{s})",
            "CreateJobTemplate",
            _Operations.create_job_template,
        ),
        (
            "GET",
            r"/job-templates/(?P<jobTemplateId>{s})",
            "DescribeJobTemplate",
            template_api.describe_job_template,
        ),
        (
            "DELETE",
            r"/job-templates/(?P<jobTemplateId>{s})",
            "DeleteJobTemplate",
            template_api.delete_job_template,
        ),
        (
            "GET",
            r"/managed-job-templates",
            "ListManagedJobTemplates",
            template_api.list_managed_job_templates,
        ),
        (
            "GET",
            r"/managed-job-templates/(?P<templateName>{s})",
            "DescribeManagedJobTemplate",
            template_api.describe_managed_job_template,
        ),
    ]
    + fleet_api.ROUTES
]
SUPPORTED_OPERATIONS = tuple(name for _, _, name, _ in _ROUTES)


def _refuse_device_api(authorization: str) -> None:
    """boto3's ``iot-jobs-data`` client signs for that service: its routes overlap ours
    (GET /things/{thing}/jobs), so answering would be silently wrong."""
    if "/iot-jobs-data/aws4_request" in authorization:
        raise UnknownOperationError(
            "this is the control plane (iot); the HTTPS device API (iot-jobs-data) is served "
            "at jobs_data_url in endpoints.json, with the thing's client certificate"
        )


def _route(method: str, path: str) -> Tuple[str, Handler, Dict[str, str]]:
    for route_method, pattern, name, handler in _ROUTES:
        match = pattern.fullmatch(path)
        if match and route_method == method:
            params = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
            return name, handler, params
    raise UnknownOperationError(
        f"{method} {path} is not an operation of the local Jobs control plane; it serves "
        f"{', '.join(SUPPORTED_OPERATIONS)}"
    )


class _RequestHandler(JsonRequestHandler):
    server: ControlPlaneServer
    server_version = "local-jobs-control-plane"

    def do_PATCH(self) -> None:
        self._handle()

    def _handle(self) -> None:
        request_id = str(uuid.uuid4())
        raw = self._read_body()
        try:
            parts = urllib.parse.urlsplit(self.path)
            _refuse_device_api(self.headers.get("Authorization", ""))
            name, handler, params = _route(self.command, parts.path)
            query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
            result = handler(_Operations(self.server), params, query, _parse_body(raw))
        except ServiceError as exc:
            log.info("%s %s: %s: %s", self.command, self.path, exc.aws_type, exc)
            self._send(exc.http_status, {"message": str(exc)}, request_id, exc.aws_type)
            return
        except Exception:
            log.exception("%s %s failed", self.command, self.path)
            self._send(
                500,
                {"message": f"internal error in the local Jobs service (request {request_id})"},
                request_id,
                "InternalFailureException",
            )
            return
        log.debug("%s %s -> %s ok", self.command, self.path, name)
        self._send(200, result if result is not None else {}, request_id)


def _parse_body(raw: bytes) -> Body:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _invalid(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object")
    return body


__all__ = [
    "ControlPlaneServer",
    "SUPPORTED_OPERATIONS",
    "UnknownOperationError",
    "check_document",
    "read_document_source",
    "serve",
    "target_thing_name",
]
