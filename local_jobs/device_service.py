"""Part of ``LocalJobsService`` (service.py): the device operations the data planes call
(MQTT and HTTPS), with the thing name taken from the topic or the client certificate:
``get_pending``, ``start_next``, ``describe_for_device``, ``update_execution``.

``DeviceOperations`` is a base class of ``LocalJobsService`` and runs with its state and
helpers: ``store``, ``operation()``, ``_lock``, ``now()``, ``_job``, ``_execution``,
``_for_device``, ``_start``, ``_watching`` and the terminal-status bookkeeping.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import (
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

from local_jobs.model import (
    ExecutionStatus,
    InvalidStateTransitionError,
    Job,
    JobExecution,
    ServiceError,
    TerminalStateError,
    VersionConflictError,
)
from local_jobs.validation import (
    NEXT,
    validate_status_details,
    validate_step_timeout,
)

log = logging.getLogger("local_jobs.service")


def execution_state_of(error: BaseException) -> Optional[JobExecution]:
    """The execution an InvalidStateTransition / VersionMismatch error reports, if any."""
    return getattr(error, "execution", None)


def with_execution(error: ServiceError, execution: JobExecution) -> ServiceError:
    """``error`` carrying the execution it is about (the reply includes its state)."""
    error.execution = execution  # type: ignore[attr-defined]
    return error


def check_version(execution: JobExecution, expected_version: Optional[int]) -> None:
    """VersionConflictError (with the execution) unless ``expected_version`` matches."""
    if expected_version is not None and expected_version != execution.version_number:
        raise with_execution(
            VersionConflictError(
                f"Job execution {execution.job_id} on {execution.thing_name} is at version "
                f"{execution.version_number}, not {expected_version}"
            ),
            execution,
        )


class DeviceOperations:
    """The device side of ``LocalJobsService``."""

    # device API (called by the data plane with the thing name taken from the topic)

    def get_pending(
        self, thing_name: str, limit: Optional[int] = None, namespace: str = ""
    ) -> Sequence[JobExecution]:
        """The thing's pending executions, IN_PROGRESS first, then QUEUED in queue order.

        ``limit`` keeps only the first ones (the device API lists at most 10). Each job
        namespace is a queue of its own; "" is the default one.
        """
        with self._lock:
            return self.store.pending_executions(thing_name, limit, namespace)

    def start_next(
        self,
        thing_name: str,
        status_details: Optional[Mapping[str, str]] = None,
        step_timeout_minutes: Optional[int] = None,
        namespace: str = "",
    ) -> Optional[Tuple[JobExecution, Job]]:
        """Claim the next pending execution (StartNextPendingJobExecution).

        An IN_PROGRESS head is returned unchanged (its statusDetails are not touched); a
        QUEUED head becomes IN_PROGRESS with ``status_details`` and version + 1. Returns None
        when nothing is pending.
        """
        details = None if status_details is None else validate_status_details(status_details)
        if step_timeout_minutes is not None:
            validate_step_timeout(step_timeout_minutes)
        with self.operation():
            pending = self.store.pending_executions(thing_name, limit=1, namespace=namespace)
            if not pending:
                return None
            head = pending[0]
            job = self._job(head.job_id)
            if head.status is ExecutionStatus.IN_PROGRESS:
                return head, self._for_device(job)
            now = self.now()
            with self._watching([thing_name], namespace), self.store.transaction():
                head = self._start(head, job, now, details, step_timeout_minutes)
            log.info("job %s started on %s by start-next", head.job_id, thing_name)
            return head, self._for_device(job)

    def describe_for_device(
        self,
        thing_name: str,
        job_id: str,
        execution_number: Optional[int] = None,
        namespace: str = "",
    ) -> Optional[Tuple[JobExecution, Job]]:
        """DescribeJobExecution over MQTT; ``$next`` gives the head or None.

        Raises ResourceNotFoundError, or TerminalStateError for a terminal execution
        (DG:jobs-api TerminalStateReached: "describe ... on a job in a terminal state").
        """
        with self._lock:
            if job_id == NEXT:
                pending = self.store.pending_executions(thing_name, limit=1, namespace=namespace)
                if not pending:
                    return None
                return pending[0], self._for_device(self._job(pending[0].job_id))
            execution = self._execution(job_id, thing_name, execution_number, namespace)
            if execution.status.terminal:
                raise TerminalStateError(
                    f"Job execution {job_id} on {thing_name} is in terminal status "
                    f"{execution.status.value}"
                )
            return execution, self._for_device(self._job(job_id))

    def update_execution(
        self,
        thing_name: str,
        job_id: str,
        status: ExecutionStatus,
        *,
        status_details: Optional[Mapping[str, str]] = None,
        expected_version: Optional[int] = None,
        execution_number: Optional[int] = None,
        step_timeout_minutes: Optional[int] = None,
        namespace: str = "",
    ) -> Tuple[JobExecution, Job]:
        """UpdateJobExecution from the device; returns the updated execution and its job.

        Raises ResourceNotFoundError; InvalidStateTransitionError (with ``.execution``) when
        the execution is terminal or ``status`` is not device-settable; VersionConflictError
        (with ``.execution``) when ``expected_version`` differs; InvalidRequestError.
        """
        details = None if status_details is None else validate_status_details(status_details)
        if step_timeout_minutes is not None:
            validate_step_timeout(step_timeout_minutes)
        with self.operation():
            execution = self._execution(job_id, thing_name, execution_number, namespace)
            job = self._job(job_id)
            if execution.status.terminal:
                raise with_execution(
                    InvalidStateTransitionError(
                        f"Job execution {job_id} on {thing_name} is already "
                        f"{execution.status.value}: a terminal status is final"
                    ),
                    execution,
                )
            if not status.device_settable:
                raise with_execution(
                    InvalidStateTransitionError(
                        f"a device cannot set status {status.value} on job execution {job_id}"
                    ),
                    execution,
                )
            check_version(execution, expected_version)
            now = self.now()
            with self._watching([thing_name], execution.namespace), self.store.transaction():
                if status is ExecutionStatus.IN_PROGRESS:
                    if execution.status is ExecutionStatus.QUEUED:
                        execution = self._start(
                            execution, job, now, details, step_timeout_minutes
                        )
                    else:
                        execution = dataclasses.replace(
                            execution,
                            version_number=execution.version_number + 1,
                            last_updated_at=now,
                            status_details=execution.status_details if details is None else details,
                            step_deadline=self._step_deadline(
                                execution, now, step_timeout_minutes
                            ),
                        )
                        self.store.update_execution(execution)
                        self._wake_timer_for(execution)
                else:
                    # QUEUED -> SUCCEEDED/FAILED/REJECTED is allowed: the DG shows QUEUED ->
                    # REJECTED, and nothing documents a refusal of the others.
                    execution = dataclasses.replace(
                        execution,
                        status=status,
                        version_number=execution.version_number + 1,
                        last_updated_at=now,
                        status_details=execution.status_details if details is None else details,
                        in_progress_deadline=None,
                        step_deadline=None,
                    )
                    self.store.update_execution(execution)
                    self._after_terminal(execution, job, now)
            if execution.status.terminal:
                self._abort_if_due(job_id)
            log.info(
                "job %s execution %s on %s updated to %s (version %s)",
                job_id,
                execution.execution_number,
                thing_name,
                status.value,
                execution.version_number,
            )
            return execution, self._for_device(job)
