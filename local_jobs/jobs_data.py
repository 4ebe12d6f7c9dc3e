"""The device API over HTTPS: AWS IoT's ``iot-jobs-data`` (``data.jobs.iot``) endpoint.

GetPendingJobExecutions ``GET /things/{thing}/jobs``, DescribeJobExecution
``GET /things/{thing}/jobs/{jobId}`` (``$next`` too), StartNextPendingJobExecution
``PUT /things/{thing}/jobs/$next`` and UpdateJobExecution ``POST /things/{thing}/jobs/{jobId}``
(botocore ``iot-jobs-data/2017-09-29``, rest-json). Mutual TLS with the local CA, as the
broker: the client certificate's common name is the thing, and a thing may act only for
itself (AWS IoT's policy variable ``${iot:Connection.Thing.ThingName}``). The same operations
as the MQTT front end (``data_plane.py``) run them, so the state machine, the checks and the
``notify``/``notify-next`` messages are the same; only the wire shapes differ: the job
document is a JSON string, there is no ``timestamp``/``clientToken``, and an error is the
``x-amzn-ErrorType`` header with a ``{"message"}`` body. Any SigV4 signature is accepted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import ssl
import urllib.parse
import uuid
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from local_jobs.certificates import SERVICE_IDENTITY
from local_jobs.data_plane import (
    describe_request,
    get_pending_request,
    start_next_request,
    update_request,
)
from local_jobs.http_json import BackgroundHTTPServer, JsonRequestHandler
from local_jobs.model import InvalidRequestError, ServiceError
from local_jobs.service import LocalJobsService
from local_jobs.validation import NEXT, check_job_id, check_thing_name

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 128 * 1024


class ForbiddenError(ServiceError):
    """The client certificate names another thing than the request does."""

    http_status = 403
    aws_type = "ForbiddenException"


class UnknownOperationError(ServiceError, LookupError):
    """The method and path name no operation of the HTTPS device API."""

    http_status = 404
    aws_type = "UnknownOperationException"


Operation = Callable[[LocalJobsService, str, Optional[str], Dict[str, Any]], Dict[str, Any]]
_THING = r"(?P<thing>[^/]+)"
_JOB = r"(?P<job>[^/]+)"
_ROUTES: Tuple[Tuple[str, re.Pattern[str], str], ...] = (
    ("GET", re.compile(rf"/things/{_THING}/jobs"), "GetPendingJobExecutions"),
    ("PUT", re.compile(rf"/things/{_THING}/jobs/\$next"), "StartNextPendingJobExecution"),
    ("GET", re.compile(rf"/things/{_THING}/jobs/{_JOB}"), "DescribeJobExecution"),
    ("POST", re.compile(rf"/things/{_THING}/jobs/{_JOB}"), "UpdateJobExecution"),
)
_OPERATIONS: Dict[str, Operation] = {
    "GetPendingJobExecutions": get_pending_request,
    "StartNextPendingJobExecution": start_next_request,
    "DescribeJobExecution": describe_request,
    "UpdateJobExecution": update_request,
}


def _route(method: str, path: str) -> Tuple[str, str, Optional[str]]:
    for route_method, pattern, name in _ROUTES:
        match = pattern.fullmatch(path)
        if match and route_method == method:
            groups = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items() if v}
            return name, groups["thing"], groups.get("job")
    raise UnknownOperationError(
        f"{method} {path} is not an operation of the local HTTPS device API (iot-jobs-data); "
        f"it serves {', '.join(_OPERATIONS)}"
    )


def _query_body(query: Mapping[str, str]) -> Dict[str, Any]:
    """DescribeJobExecution's query string as the request fields the operation reads."""
    body: Dict[str, Any] = {}
    if "includeJobDocument" in query:
        flag = query["includeJobDocument"].lower()
        if flag not in ("true", "false"):
            raise InvalidRequestError(
                f"includeJobDocument must be true or false, got {query['includeJobDocument']!r}"
            )
        body["includeJobDocument"] = flag == "true"
    if "executionNumber" in query:
        body["executionNumber"] = query["executionNumber"]
    return body


def _http_shapes(result: Dict[str, Any]) -> Dict[str, Any]:
    """The MQTT reply as iot-jobs-data answers it: the job document is a JSON string."""
    execution = result.get("execution")
    if isinstance(execution, dict) and "jobDocument" in execution:
        execution["jobDocument"] = json.dumps(execution["jobDocument"])
    if "jobDocument" in result:
        result["jobDocument"] = json.dumps(result["jobDocument"])
    return result


def handle(
    service: LocalJobsService, identity: str, method: str, target: str, raw: bytes
) -> Dict[str, Any]:
    """The response body of one request from the thing ``identity``; raises ServiceError."""
    parts = urllib.parse.urlsplit(target)
    name, thing_name, job_id = _route(method, parts.path)
    check_thing_name(thing_name)
    if identity != thing_name:
        raise ForbiddenError(
            f"the client certificate is thing {identity}'s; it may not act for thing "
            f"{thing_name}"
        )
    if job_id is not None and not (name == "DescribeJobExecution" and job_id == NEXT):
        check_job_id(job_id)
    if method == "GET":
        body = _query_body(dict(urllib.parse.parse_qsl(parts.query)))
    else:
        body = _parse_body(raw)
    with service.operation():
        return _http_shapes(_OPERATIONS[name](service, thing_name, job_id, body))


def _parse_body(raw: bytes) -> Dict[str, Any]:
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidRequestError(
            f"request body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}"
        )
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidRequestError(f"the request body is not UTF-8 JSON: {error}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    return body


class JobsDataServer(BackgroundHTTPServer):
    """The HTTPS server ``serve`` returns; ``shutdown()`` stops it and closes its socket."""

    daemon_threads = True
    thread_name = "jobs-data"

    def __init__(
        self, address: Tuple[str, int], service: LocalJobsService, context: ssl.SSLContext
    ) -> None:
        super().__init__(address, _RequestHandler)
        self.service = service
        self.socket = context.wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False
        )

    @property
    def url(self) -> str:
        """The endpoint URL for boto3's ``iot-jobs-data`` client (``endpoint_url``)."""
        return f"https://localhost:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A refused TLS handshake (no or a foreign certificate) is logged, not printed."""
        log.info("HTTPS device API: connection from %s failed", client_address, exc_info=True)



class _RequestHandler(JsonRequestHandler):
    server: JobsDataServer
    server_version = "local-jobs-data"
    timeout = 30

    def setup(self) -> None:
        super().setup()
        # The TLS handshake runs here, in the request's thread, not in the accepting one.
        self.connection.do_handshake()

    def _identity(self) -> str:
        certificate = self.connection.getpeercert() or {}
        for rdn in certificate.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    return value
        return ""

    def _handle(self) -> None:
        request_id = str(uuid.uuid4())
        raw = self._read_body()
        identity = self._identity()
        try:
            if identity == SERVICE_IDENTITY or not identity:
                raise ForbiddenError(
                    f"certificate {identity or '(no common name)'} is not a thing's"
                )
            result = handle(self.server.service, identity, self.command, self.path, raw)
        except ServiceError as error:
            log.info("%s %s from %s: %s: %s", self.command, self.path, identity,
                     error.aws_type, error)
            self._send(error.http_status, {"message": str(error)}, request_id, error.aws_type)
            return
        except Exception:
            log.exception("%s %s from %s failed", self.command, self.path, identity)
            self._send(
                500, {"message": f"internal error in the local Jobs service ({request_id})"},
                request_id, "InternalFailureException",
            )
            return
        self._send(200, result, request_id)


def serve(
    service: LocalJobsService,
    host: str,
    port: int,
    *,
    ca: os.PathLike,
    certificate: os.PathLike,
    private_key: os.PathLike,
) -> JobsDataServer:
    """Start the HTTPS device API on ``host:port`` (0 = a free port) in a daemon thread.

    Clients must present a certificate signed by ``ca``. Raises OSError when the address
    cannot be bound, ssl.SSLError for unusable certificate files.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(ca))
    context.load_cert_chain(certfile=str(certificate), keyfile=str(private_key))
    server = JobsDataServer((host, port), service, context)
    server.start()
    log.info("HTTPS device API listening on %s", server.url)
    return server
