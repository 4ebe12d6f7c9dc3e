"""The device API over MQTT: topics and payloads in, ``/accepted`` or ``/rejected`` out.

``handle_request`` maps one message on ``$aws/things/<thing>/jobs/...`` to a service call and
returns the reply; it never raises (bad input is logged and rejected with the documented code,
jobs-api.md §1.6). ``DataPlane`` is the paho-mqtt client of the privileged service identity
that feeds it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from local_jobs import payloads
from local_jobs.certificates import SERVICE_IDENTITY
from local_jobs.device_service import execution_state_of
from local_jobs.model import (
    JOB_ID_PATTERN,
    THING_NAME_PATTERN,
    InvalidRequestError,
    InvalidStateTransitionError,
    RejectCode,
    RequestThrottledError,
    ResourceNotFoundError,
    ServiceError,
    TerminalStateError,
    VersionConflictError,
)
from local_jobs.service import LocalJobsService
from local_jobs.validation import (
    NEXT,
    request_expected_version,
    request_flag,
    request_number,
    request_status,
)

log = logging.getLogger(__name__)

REQUEST_FILTER = "$aws/things/+/jobs/#"
# AWS IoT Core's MQTT payload limit (128 KB); a bigger request is refused before parsing.
MAX_REQUEST_BYTES = 128 * 1024
_REPLY_SUFFIXES = ("accepted", "rejected")
# notify, notify-next and their namespaced forms (notify-namespace-NS, notify-next-namespace-NS)
_SERVICE_TOPICS = ("notify",)
_NAMESPACE_PREFIX = "namespace-"
NAMESPACE_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,64}")

Reply = Tuple[str, Dict[str, Any]]


class _Rejection(Exception):
    """Internal: the request gets a ``/rejected`` reply with ``code``."""

    def __init__(self, code: RejectCode, message: str, execution=None):
        super().__init__(message)
        self.code = code
        self.execution = execution


_ERROR_CODES = (
    (VersionConflictError, RejectCode.VERSION_MISMATCH),
    (InvalidStateTransitionError, RejectCode.INVALID_STATE_TRANSITION),
    (ResourceNotFoundError, RejectCode.RESOURCE_NOT_FOUND),
    (TerminalStateError, RejectCode.TERMINAL_STATE_REACHED),
    (RequestThrottledError, RejectCode.REQUEST_THROTTLED),
    (InvalidRequestError, RejectCode.INVALID_REQUEST),
)


def _code_of(error: ServiceError) -> RejectCode:
    for kind, code in _ERROR_CODES:
        if isinstance(error, kind):
            return code
    return RejectCode.INTERNAL_ERROR


class Throttle:
    """Per-thing token bucket: ``rate`` requests a second, bursts of ``2 * rate``."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = max(1.0, 2 * rate)
        self._clock = clock
        self._buckets: Dict[str, Tuple[float, float]] = {}
        self._buckets_lock = threading.Lock()

    def allow(self, thing_name: str) -> bool:
        now = self._clock()
        with self._buckets_lock:
            tokens, last = self._buckets.get(thing_name, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[thing_name] = (tokens, now)
                return False
            self._buckets[thing_name] = (tokens - 1.0, now)
            return True


def handle_request(
    service: LocalJobsService,
    topic: str,
    payload: bytes,
    throttle: Optional[Throttle] = None,
) -> List[Reply]:
    """The reply (zero or one message) to one message on a jobs topic; never raises.

    Messages on reply and notification topics (the service's own) get no reply.
    """
    parts = topic.split("/")
    if len(parts) < 5 or parts[0] != "$aws" or parts[1] != "things" or parts[3] != "jobs":
        return []
    thing_name, rest = parts[2], parts[4:]
    if rest[-1] in _REPLY_SUFFIXES or (len(rest) == 1 and rest[0].startswith(_SERVICE_TOPICS)):
        return []
    reply_base = topic
    client_token: Optional[str] = None
    try:
        body = _parse_payload(payload)
        token = body.get("clientToken")
        if token is not None:
            if not isinstance(token, str):
                raise _Rejection(RejectCode.INVALID_REQUEST, "clientToken must be a string")
            client_token = token
        if not THING_NAME_PATTERN.fullmatch(thing_name):
            raise _Rejection(RejectCode.INVALID_TOPIC, f"invalid thing name {thing_name!r}")
        operation, job_id, namespace = _route(rest)
        if throttle is not None and not throttle.allow(thing_name):
            raise RequestThrottledError(f"too many requests from thing {thing_name}")
        accepted = operation(service, thing_name, job_id, body, namespace)
    except _Rejection as rejection:
        return [_rejected(reply_base, rejection.code, str(rejection), client_token,
                          rejection.execution, service.now())]
    except ServiceError as error:
        code = _code_of(error)
        execution = None
        if code in (RejectCode.INVALID_STATE_TRANSITION, RejectCode.VERSION_MISMATCH):
            execution = execution_state_of(error)
        log.info("rejected %s from %s: %s %s", topic, thing_name, code.value, error)
        return [_rejected(reply_base, code, str(error), client_token, execution, service.now())]
    except Exception:
        log.exception("internal error handling %s", topic)
        return [_rejected(reply_base, RejectCode.INTERNAL_ERROR, "Internal error", client_token,
                          None, service.now())]
    accepted["timestamp"] = payloads.seconds(service.now())
    if client_token is not None:
        accepted["clientToken"] = client_token
    return [(reply_base + "/accepted", accepted)]


def _rejected(base, code, message, client_token, execution, now) -> Reply:
    body: Dict[str, Any] = {"code": code.value, "message": message}
    if client_token is not None:
        body["clientToken"] = client_token
    body["timestamp"] = payloads.seconds(now)
    # executionState only for these two codes (DG:jobs-api ErrorResponse).
    if execution is not None and code in (
        RejectCode.INVALID_STATE_TRANSITION,
        RejectCode.VERSION_MISMATCH,
    ):
        body["executionState"] = payloads.execution_state(execution)
    return base + "/rejected", body


def _parse_payload(payload: bytes) -> Dict[str, Any]:
    if len(payload) > MAX_REQUEST_BYTES:
        raise _Rejection(
            RejectCode.INVALID_REQUEST,
            f"payload is {len(payload)} bytes; the limit is {MAX_REQUEST_BYTES}",
        )
    if not payload.strip():
        # An empty payload is taken as {} so `mosquitto_pub -n` style requests work.
        return {}
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise _Rejection(RejectCode.INVALID_JSON, f"payload is not UTF-8 JSON: {error}") from None
    if not isinstance(body, dict):
        raise _Rejection(RejectCode.INVALID_REQUEST, "payload must be a JSON object")
    return body


def _route(rest: List[str]):
    """(operation, job id, namespace) of a request topic's suffix after ``jobs/``.

    A job namespace adds a level after the job id, as the Greengrass nucleus uses it
    (``$next/namespace-aws-gg-deployment/get``, ``<jobId>/namespace-<ns>/update``).
    """
    namespace = ""
    if len(rest) == 3 and rest[1].startswith(_NAMESPACE_PREFIX):
        namespace = rest[1][len(_NAMESPACE_PREFIX) :]
        if not NAMESPACE_PATTERN.fullmatch(namespace):
            raise _Rejection(RejectCode.INVALID_TOPIC, f"invalid namespace {namespace!r} in topic")
        rest = [rest[0], rest[2]]
    if rest == ["get"]:
        return get_pending_request, None, namespace
    if rest == ["start-next"]:
        return start_next_request, None, namespace
    if len(rest) == 2 and rest[1] in ("get", "update"):
        job_id = rest[0]
        if rest[1] == "get" and job_id == NEXT:
            return describe_request, job_id, namespace
        if not JOB_ID_PATTERN.fullmatch(job_id):
            raise _Rejection(RejectCode.INVALID_TOPIC, f"invalid jobId {job_id!r} in topic")
        return (describe_request if rest[1] == "get" else update_request), job_id, namespace
    raise _Rejection(RejectCode.INVALID_TOPIC, f"no jobs API on topic suffix {'/'.join(rest)!r}")


def _details(body: Dict[str, Any]):
    return body.get("statusDetails") if body.get("statusDetails") is not None else None


# The four device operations: (service, thing, job id, request body[, namespace]) ->
# accepted body in the MQTT shapes. Callers hold service.operation(); jobs_data.py (HTTPS)
# uses them too.


def get_pending_request(service, thing_name, _job_id, body, namespace=""):
    """GetPendingJobExecutions."""
    lists = payloads.pending_lists(
        service.get_pending(thing_name, payloads.MAX_LISTED, namespace=namespace)
    )
    return {"inProgressJobs": lists["IN_PROGRESS"], "queuedJobs": lists["QUEUED"]}


def start_next_request(service, thing_name, _job_id, body, namespace=""):
    """StartNextPendingJobExecution."""
    found = service.start_next(
        thing_name,
        status_details=_details(body),
        step_timeout_minutes=request_number(body, "stepTimeoutInMinutes"),
        namespace=namespace,
    )
    if found is None:
        return {}  # "the response does not include the execution field"
    execution, job = found
    return {"execution": payloads.execution_body(execution, job, service.now())}


def describe_request(service, thing_name, job_id, body, namespace=""):
    """DescribeJobExecution (``job_id`` may be ``$next``)."""
    include_document = request_flag(body, "includeJobDocument", True)  # DG: default true
    execution_number = request_number(body, "executionNumber")
    found = service.describe_for_device(thing_name, job_id, execution_number, namespace=namespace)
    if found is None:
        return {}
    execution, job = found
    return {"execution": payloads.execution_body(execution, job, service.now(), include_document)}


def update_request(service, thing_name, job_id, body, namespace=""):
    """UpdateJobExecution."""
    status = request_status(body)
    include_state = request_flag(body, "includeJobExecutionState", False)
    include_document = request_flag(body, "includeJobDocument", False)
    expected_version = request_expected_version(body)
    execution, job = service.update_execution(
        thing_name,
        job_id,
        status,
        status_details=_details(body),
        expected_version=expected_version,
        execution_number=request_number(body, "executionNumber"),
        step_timeout_minutes=request_number(body, "stepTimeoutInMinutes"),
        namespace=namespace,
    )
    accepted: Dict[str, Any] = {}
    if include_state:
        accepted["executionState"] = payloads.execution_state(execution)
    if include_document:
        accepted["jobDocument"] = payloads.job_document(job)
    return accepted


def _no_delay(_client: mqtt.Client, _userdata: object, sock) -> None:
    # Without TCP_NODELAY each reply waits for the broker's delayed ACK of the previous one
    # (Nagle's algorithm): about 40 ms per request/reply on loopback.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class DataPlane:
    """The service's MQTT client: subscribes to every thing's jobs topics and answers them.

    Replies and notifications go out at QoS 1. paho reconnects by itself when the broker
    restarts; ``on_subscribed`` is called after every successful (re)subscription.
    """

    def __init__(
        self,
        service: LocalJobsService,
        *,
        host: str,
        port: int,
        ca: os.PathLike,
        certificate: os.PathLike,
        private_key: os.PathLike,
        requests_per_second: Optional[float] = None,
        on_subscribed: Optional[Callable[[], None]] = None,
    ):
        self.service = service
        self.host = host
        self.port = port
        self._throttle = Throttle(requests_per_second) if requests_per_second else None
        self._on_subscribed = on_subscribed
        self.subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{SERVICE_IDENTITY}-{os.getpid()}",
            protocol=mqtt.MQTTv5,
        )
        self._client.tls_set(
            ca_certs=str(ca), certfile=str(certificate), keyfile=str(private_key)
        )
        self._client.max_inflight_messages_set(1000)
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._client.on_socket_open = _no_delay
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect

    def start(self, timeout: float = 10.0) -> None:
        """Connect (retrying in the background) and wait up to ``timeout`` for the subscription.

        Raises TimeoutError when the broker does not answer in time.
        """
        self.service.set_publisher(self.publish)
        self._client.connect_async(self.host, self.port, keepalive=30, clean_start=True)
        self._client.loop_start()
        if not self.subscribed.wait(timeout):
            raise TimeoutError(f"no subscription on {self.host}:{self.port} in {timeout}s")

    def stop(self) -> None:
        self.service.set_publisher(None)
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, body: Dict[str, Any]) -> None:
        """Publish ``body`` as JSON at QoS 1 (queued by paho while disconnected)."""
        self._client.publish(topic, json.dumps(body, separators=(",", ":")), qos=1)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the service connection: %s", reason_code)
            return
        log.info("connected to broker %s:%s", self.host, self.port)
        # noLocal: the service does not receive its own replies and notifications.
        client.subscribe(REQUEST_FILTER, options=SubscribeOptions(qos=1, noLocal=True))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("broker refused subscription to %s: %s", REQUEST_FILTER, reason_codes)
            return
        log.info("subscribed to %s", REQUEST_FILTER)
        self.subscribed.set()
        if self._on_subscribed is not None:
            try:
                self._on_subscribed()
            except Exception:
                log.exception("on_subscribed callback failed")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        log.warning("disconnected from broker: %s", reason_code)

    def _on_message(self, client, userdata, message) -> None:
        try:
            with self.service.operation():
                for topic, body in handle_request(
                    self.service, message.topic, message.payload, self._throttle
                ):
                    self.publish(topic, body)
        except Exception:  # never let a message kill the network thread
            log.exception("failed to handle message on %s", message.topic)
