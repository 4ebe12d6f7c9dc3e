"""What the local Jobs service holds and the contract both of its front ends call.

The data plane (MQTT, ``data_plane.py``) and the control plane (HTTP, ``control_plane.py``)
are two views on one ``JobsService`` (``service.py``). This module holds only values and the
errors they raise; it does no I/O.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Tuple

# Limits from the botocore service model and the AWS IoT Jobs documentation
# (../shared/jobs-api.md §1.8).
JOB_ID_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,64}")
THING_NAME_PATTERN = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
STATUS_DETAILS_KEY_PATTERN = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
MAX_STATUS_DETAILS_VALUE_CHARS = 1024
MAX_JOB_DOCUMENT_CHARS = 32768
MIN_STEP_TIMEOUT_MINUTES = 1
MAX_STEP_TIMEOUT_MINUTES = 10080
DISCARD_STEP_TIMER = -1
MAX_IN_PROGRESS_TIMEOUT_MINUTES = 10080
MAX_PENDING_IN_LISTS = 10
ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"


def thing_arn(thing_name: str, region: str = DEFAULT_REGION) -> str:
    """The ARN AWS IoT gives a thing, as CreateJob targets and execution listings carry it."""
    return f"arn:aws:iot:{region}:{ACCOUNT_ID}:thing/{thing_name}"


def job_arn(job_id: str, region: str = DEFAULT_REGION) -> str:
    """The ARN AWS IoT gives a job."""
    return f"arn:aws:iot:{region}:{ACCOUNT_ID}:job/{job_id}"


def thing_group_arn(group_name: str, region: str = DEFAULT_REGION) -> str:
    """The ARN AWS IoT gives a thing group."""
    return f"arn:aws:iot:{region}:{ACCOUNT_ID}:thinggroup/{group_name}"


class ExecutionStatus(str, enum.Enum):
    """Status of one job execution on one thing (DG:iot-jobs-lifecycle)."""

    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    REJECTED = "REJECTED"
    REMOVED = "REMOVED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        """True for the statuses an execution never leaves."""
        return self not in (ExecutionStatus.QUEUED, ExecutionStatus.IN_PROGRESS)

    @property
    def device_settable(self) -> bool:
        """True for the statuses a device may request with UpdateJobExecution."""
        return self in (
            ExecutionStatus.IN_PROGRESS,
            ExecutionStatus.SUCCEEDED,
            ExecutionStatus.FAILED,
            ExecutionStatus.REJECTED,
        )


class JobStatus(str, enum.Enum):
    """Status of a job as a whole (control plane)."""

    IN_PROGRESS = "IN_PROGRESS"
    CANCELED = "CANCELED"
    DELETION_IN_PROGRESS = "DELETION_IN_PROGRESS"
    COMPLETED = "COMPLETED"


class RejectCode(str, enum.Enum):
    """The nine ``code`` values of a device API rejection (DG:jobs-api ErrorResponse)."""

    INVALID_TOPIC = "InvalidTopic"
    INVALID_JSON = "InvalidJson"
    INVALID_REQUEST = "InvalidRequest"
    INVALID_STATE_TRANSITION = "InvalidStateTransition"
    RESOURCE_NOT_FOUND = "ResourceNotFound"
    VERSION_MISMATCH = "VersionMismatch"
    INTERNAL_ERROR = "InternalError"
    REQUEST_THROTTLED = "RequestThrottled"
    TERMINAL_STATE_REACHED = "TerminalStateReached"


class RetryFailureType(str, enum.Enum):
    """``failureType`` of a ``jobExecutionsRetryConfig`` criterion."""

    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    ALL = "ALL"


@dataclass(frozen=True)
class RetryCriterion:
    """Retry an execution that ended with ``failure_type`` up to ``number_of_retries`` times."""

    failure_type: RetryFailureType
    number_of_retries: int


class TargetSelection(str, enum.Enum):
    """``targetSelection`` of a job: SNAPSHOT completes; CONTINUOUS follows its groups."""

    SNAPSHOT = "SNAPSHOT"
    CONTINUOUS = "CONTINUOUS"


@dataclass(frozen=True)
class RolloutConfig:
    """``jobExecutionsRolloutConfig``: how many executions are queued per (service) minute.

    Without ``base_rate_per_minute`` the rate is ``maximum_per_minute``; with it the rate
    starts there and is multiplied by ``increment_factor`` each time ``notified_things``
    more things were notified or ``succeeded_things`` more succeeded, up to the maximum.
    """

    maximum_per_minute: int = 1000
    base_rate_per_minute: Optional[int] = None
    increment_factor: Optional[float] = None
    notified_things: Optional[int] = None
    succeeded_things: Optional[int] = None


@dataclass(frozen=True)
class AbortCriterion:
    """One ``abortConfig`` criterion: cancel the job once enough executions failed so."""

    failure_type: str  # FAILED, REJECTED, TIMED_OUT or ALL
    threshold_percentage: float
    min_executed_things: int
    action: str = "CANCEL"


@dataclass(frozen=True)
class Job:
    """A job as CreateJob made it; ``document`` is the JSON text exactly as given."""

    job_id: str
    document: str
    targets: Tuple[str, ...]  # thing names, in the order given
    status: JobStatus
    created_at: float  # seconds since the epoch
    last_updated_at: float
    description: Optional[str] = None
    completed_at: Optional[float] = None
    in_progress_timeout_minutes: Optional[int] = None
    retry_criteria: Tuple[RetryCriterion, ...] = ()
    force_canceled: bool = False
    reason_code: Optional[str] = None
    comment: Optional[str] = None
    # Thing group names among the targets (``targets`` keeps the thing targets).
    target_groups: Tuple[str, ...] = ()
    target_selection: TargetSelection = TargetSelection.SNAPSHOT
    namespace_id: Optional[str] = None
    rollout: Optional[RolloutConfig] = None
    abort_criteria: Tuple[AbortCriterion, ...] = ()

    @property
    def arn(self) -> str:
        return job_arn(self.job_id)

    @property
    def continuous(self) -> bool:
        return self.target_selection is TargetSelection.CONTINUOUS


@dataclass(frozen=True)
class JobExecution:
    """One job execution on one thing; ``version_number`` starts at 1 when queued."""

    job_id: str
    thing_name: str
    status: ExecutionStatus
    execution_number: int
    version_number: int
    queued_at: float
    last_updated_at: float
    started_at: Optional[float] = None
    status_details: Mapping[str, str] = field(default_factory=dict)
    force_canceled: bool = False
    retry_attempt: int = 0
    # Absolute deadlines (seconds since the epoch) of the in-progress and step timers, if set.
    in_progress_deadline: Optional[float] = None
    step_deadline: Optional[float] = None
    # The job's namespaceId ("" for none): the device sees it only on that namespace's topics.
    namespace: str = ""

    def approximate_seconds_before_timed_out(self, now: float) -> Optional[int]:
        """Seconds until the earlier of the two timers fires, or None when none runs."""
        deadlines = [d for d in (self.in_progress_deadline, self.step_deadline) if d is not None]
        if self.status is not ExecutionStatus.IN_PROGRESS or not deadlines:
            return None
        return max(0, int(min(deadlines) - now))


class ServiceError(Exception):
    """Root of the errors the local Jobs service reports to a client."""

    http_status = 500
    aws_type = "InternalFailureException"


class InvalidRequestError(ServiceError, ValueError):
    """The request is malformed or names an invalid value."""

    http_status = 400
    aws_type = "InvalidRequestException"


class ResourceNotFoundError(ServiceError, LookupError):
    """The job, thing or execution named does not exist."""

    http_status = 404
    aws_type = "ResourceNotFoundException"


class ResourceAlreadyExistsError(ServiceError):
    """A job with that id exists already ("Job <id> already exists.")."""

    http_status = 409
    aws_type = "ResourceAlreadyExistsException"


class InvalidStateTransitionError(ServiceError):
    """The execution's current status does not allow the change asked for."""

    http_status = 409
    aws_type = "InvalidStateTransitionException"


class VersionConflictError(ServiceError):
    """``expectedVersion`` does not match the execution's version."""

    http_status = 409
    aws_type = "VersionConflictException"


class TerminalStateError(ServiceError):
    """Describe on an execution that is in a terminal status (device API TerminalStateReached)."""

    http_status = 410
    aws_type = "TerminalStateException"


class RequestThrottledError(ServiceError):
    """Too many requests from one thing (device API RequestThrottled)."""

    http_status = 429
    aws_type = "ThrottlingException"


class JobsService:
    """The operations both front ends call; ``service.py`` implements them over SQLite.

    Every method is thread-safe and, where it changes what a thing sees, publishes the
    ``notify`` / ``notify-next`` messages the real service would.
    """

    def create_job(
        self,
        job_id: str,
        targets: Sequence[str],
        document: str,
        *,
        description: Optional[str] = None,
        in_progress_timeout_minutes: Optional[int] = None,
        retry_criteria: Sequence[RetryCriterion] = (),
    ) -> Job:
        """Queue an execution of a new job on each target thing name.

        Raises ResourceAlreadyExistsError("Job <id> already exists."), InvalidRequestError for
        an invalid id, thing name, document (not JSON object text, over 32768 chars) or timeout.
        """
        raise NotImplementedError

    def describe_job(self, job_id: str) -> Job:
        """Raises ResourceNotFoundError."""
        raise NotImplementedError

    def list_jobs(self) -> Sequence[Job]:
        """Every job, in creation order."""
        raise NotImplementedError

    def job_process_counts(self, job_id: str) -> Dict[ExecutionStatus, int]:
        """How many of the job's executions are in each status (for ``jobProcessDetails``)."""
        raise NotImplementedError

    def cancel_job(
        self,
        job_id: str,
        *,
        force: bool = False,
        reason_code: Optional[str] = None,
        comment: Optional[str] = None,
    ) -> Job:
        """Cancel QUEUED executions; IN_PROGRESS ones too when ``force``.

        Raises ResourceNotFoundError; InvalidRequestError when the job is already completed
        or canceled without force.
        """
        raise NotImplementedError

    def delete_job(self, job_id: str, *, force: bool = False) -> None:
        """Delete the job and its executions; IN_PROGRESS ones need ``force``.

        Raises ResourceNotFoundError; InvalidStateTransitionError when an execution is
        IN_PROGRESS and not ``force``.
        """
        raise NotImplementedError

    def describe_job_execution(
        self, job_id: str, thing_name: str, execution_number: Optional[int] = None
    ) -> JobExecution:
        """Raises ResourceNotFoundError."""
        raise NotImplementedError

    def list_job_executions_for_job(
        self, job_id: str, status: Optional[ExecutionStatus] = None
    ) -> Sequence[JobExecution]:
        """Latest execution per thing, in target order. Raises ResourceNotFoundError."""
        raise NotImplementedError

    def list_job_executions_for_thing(
        self, thing_name: str, status: Optional[ExecutionStatus] = None
    ) -> Sequence[JobExecution]:
        """Latest execution of each job on the thing, in creation order."""
        raise NotImplementedError

    def cancel_job_execution(
        self,
        job_id: str,
        thing_name: str,
        *,
        force: bool = False,
        expected_version: Optional[int] = None,
        status_details: Optional[Mapping[str, str]] = None,
    ) -> None:
        """Cancel one execution.

        Raises ResourceNotFoundError; InvalidStateTransitionError when it is terminal, or
        IN_PROGRESS without ``force``; VersionConflictError on an ``expected_version`` mismatch.
        """
        raise NotImplementedError

    def known_things(self) -> Sequence[str]:
        """Thing names the service knows (those with certificates)."""
        raise NotImplementedError
