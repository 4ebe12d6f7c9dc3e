"""The handler's world: what a job handler gets, returns and raises.

A handler is a plain callable ``handler(document, job) -> statusDetails`` (a string-to-string
mapping, or None) that raises ``JobFailed``/``JobRejected`` (agent/errors.py) with a reason an
operator can act on, or ``JobHandedOver`` when the agent stops while work it started goes on
(the next start runs it again with ``attempt`` + 1). It never publishes and never exits the
process. ``job`` is a ``JobContext``: the job's id, execution number and attempt, a logger
that names the job, ``report_progress``, and ``should_stop()``/``wait()``/``stop_cause`` to
learn that the service ended the job or the agent is stopping.

Nothing here imports the protocol (job_client.py) or any handler: they all import this.
"""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, MutableMapping, Optional, Tuple

from agent.errors import JobError, JobRejected
from agent.status_details import fit_status_details

__all__ = [
    "Handler",
    "JobContext",
    "Outcome",
    "Status",
    "StopReason",
    "failure_details",
    "outcome_of_error",
]


class Status(str, enum.Enum):
    """The execution statuses a device reports."""

    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"


class StopReason(str, enum.Enum):
    """Why ``JobContext.should_stop()`` became true."""

    SERVICE_ENDED = "the service ended the job"  # canceled, timed out or deleted there
    AGENT_STOPPING = "agent shutting down"  # the agent stops; work left running is handed over

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Outcome:
    """A final status and the statusDetails that explain it."""

    status: Status
    details: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def failed(cls, reason: str, code: Optional[str] = None, **details: str) -> Outcome:
        return cls(Status.FAILED, failure_details(reason, code, details))

    @classmethod
    def rejected(cls, reason: str, code: Optional[str] = None, **details: str) -> Outcome:
        return cls(Status.REJECTED, failure_details(reason, code, details))


def failure_details(
    reason: str, code: Optional[str], details: Optional[Mapping[str, Any]] = None
) -> Dict[str, str]:
    """statusDetails for FAILED/REJECTED: ``reason`` and ``errorCode`` first, so they survive
    the ten-pair limit, then the extra ``details``."""
    result: Dict[str, Any] = {"reason": reason}
    if code:
        result["errorCode"] = code
    for key, value in (details or {}).items():
        result.setdefault(key, value)
    return fit_status_details(result)


def outcome_of_error(error: JobError) -> Outcome:
    """The final status a handler's JobRejected/JobFailed asks for."""
    status = Status.REJECTED if isinstance(error, JobRejected) else Status.FAILED
    return Outcome(status, failure_details(error.reason, error.code, error.details))


class _JobLogAdapter(logging.LoggerAdapter):
    """Prefixes every line with the job id."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> Tuple[Any, Any]:
        return f"job {self.extra['job_id']}: {msg}", kwargs


class JobContext:
    """What a handler knows about its job and how it talks back.

    ``job_id``, ``execution_number``, ``attempt`` (1 on the first run, more when resumed after
    an agent restart) and ``log`` (a logger adapter that prefixes the job id). ``wake`` is
    called (from the handler's thread) when progress waits to be sent.
    """

    def __init__(
        self,
        job_id: str,
        execution_number: int,
        attempt: int,
        wake: Callable[[], None] = lambda: None,
    ):
        self.job_id = job_id
        self.execution_number = execution_number
        self.attempt = attempt
        self.log = _JobLogAdapter(logging.getLogger("job_client.handler"), {"job_id": job_id})
        self._wake = wake
        self._lock = threading.Lock()  # guards _unsent and _latest
        self._unsent: Optional[Dict[str, str]] = None
        self._latest: Optional[Dict[str, str]] = None
        self._stop = threading.Event()
        self._stop_cause: Optional[StopReason] = None
        self._stop_reason = ""

    def report_progress(self, details: Mapping[str, Any]) -> None:
        """Report IN_PROGRESS with these statusDetails. Never blocks.

        Updates are throttled (the latest details win) and each one also refreshes the step
        timeout. Raises TypeError if ``details`` is not a mapping.
        """
        fitted = fit_status_details(details)
        with self._lock:
            had_unsent = self._unsent is not None
            self._unsent = fitted
            self._latest = fitted
        if not had_unsent:
            self._wake()

    def should_stop(self) -> bool:
        """True once the service ended the job (canceled, timed out, deleted) or the agent is
        shutting down; a handler should then finish or give up as soon as it safely can."""
        return self._stop.is_set()

    def agent_stopping(self) -> bool:
        """True once the agent is stopping (not when the service ended the job): work that
        goes on without the handler may be handed over (raise JobHandedOver)."""
        return self._stop.is_set() and self._stop_cause is StopReason.AGENT_STOPPING

    @property
    def stop_cause(self) -> Optional[StopReason]:
        """Why ``should_stop()`` is true (None while it is not)."""
        return self._stop_cause if self._stop.is_set() else None

    @property
    def stop_reason(self) -> str:
        """Why ``should_stop()`` is true, in words for a reason text ("" while it is not)."""
        return self._stop_reason

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early when the job should stop; returns
        ``should_stop()``."""
        return self._stop.wait(seconds)

    def _request_stop(self, cause: StopReason, detail: str = "") -> None:
        """Tell the handler to stop; ``detail`` words the cause (default: the cause's text)."""
        if not self._stop.is_set():
            self._stop_cause = cause
            self._stop_reason = detail or cause.value
            self._stop.set()

    def _take_unsent(self) -> Optional[Dict[str, str]]:
        with self._lock:
            unsent, self._unsent = self._unsent, None
            return unsent

    def _has_unsent(self) -> bool:
        with self._lock:
            return self._unsent is not None

    def _latest_details(self) -> Optional[Dict[str, str]]:
        with self._lock:
            return self._latest


Handler = Callable[[Mapping[str, Any], JobContext], Optional[Mapping[str, str]]]
