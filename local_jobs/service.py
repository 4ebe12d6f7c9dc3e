"""The local Jobs service: the state machine over SQLite, notifications and timers.

``LocalJobsService`` implements the ``JobsService`` contract of ``model.py`` (the control
plane calls it) plus the device operations the MQTT data plane calls (``get_pending``,
``start_next``, ``describe_for_device``, ``update_execution``). Every change that alters a
thing's pending queue publishes the ``notify`` / ``notify-next`` messages the real service
would (jobs-api.md §1.5):

- ``notify`` when the *set* of pending executions changes (one queued, one leaving for a
  terminal status). A QUEUED -> IN_PROGRESS change leaves the set alone and publishes
  nothing: the DG worked example and the PY2 live run show that, though the DG intro text
  says otherwise; we follow the live behaviour.
- ``notify-next`` when the *head* of the queue changes (IN_PROGRESS first, then queue
  order), with no ``execution`` once the queue is empty.

Request rules live in ``validation.py``; the process that runs the service is ``server.py``.
The class is written in three files, one concern each: the state machine here, the fleet
operations (rollouts, aborts, thing groups, CONTINUOUS jobs) in ``fleet_service.py`` and the
device operations (start-next, describe, update) in ``device_service.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import threading
import time
from typing import (
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

from local_jobs import payloads, rollouts, validation
from local_jobs.device_service import DeviceOperations, check_version, with_execution
from local_jobs.fleet_service import FleetOperations
from local_jobs.model import (
    DISCARD_STEP_TIMER,
    AbortCriterion,
    ExecutionStatus,
    InvalidRequestError,
    InvalidStateTransitionError,
    Job,
    JobExecution,
    JobsService,
    JobStatus,
    ResourceAlreadyExistsError,
    ResourceNotFoundError,
    RetryCriterion,
    RetryFailureType,
    RolloutConfig,
    TargetSelection,
)
from local_jobs.registry import Registry
from local_jobs.store import Store
from local_jobs.validation import (
    MAX_RETRIES_PER_EXECUTION,
    validate_status_details,
)

log = logging.getLogger(__name__)

Publisher = Callable[[str, dict], None]


class LocalJobsService(FleetOperations, DeviceOperations, JobsService):
    """Jobs and executions in a ``Store``; notifications through ``publish(topic, payload)``.

    ``minute_seconds`` is how many real seconds one service "minute" lasts, so tests can make
    step and in-progress timeouts fire quickly. ``things`` returns the known thing names.
    """

    def __init__(
        self,
        store: Store,
        publish: Optional[Publisher] = None,
        *,
        minute_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
        things: Callable[[], Sequence[str]] = tuple,
        run_timers: bool = True,
        device_document: Optional[Callable[[Job], str]] = None,
    ):
        if minute_seconds <= 0:
            raise ValueError(f"minute_seconds must be positive, got {minute_seconds}")
        self.store = store
        # The document a device is handed (presigned-URL placeholders filled in, s3.py).
        self._device_document = device_document
        self.minute_seconds = float(minute_seconds)
        self._publish = publish
        self._clock = clock
        self._things = things
        # One lock serialises every operation: the queue a thing sees changes atomically and
        # notifications leave in the order the changes happened.
        self._lock = threading.RLock()
        self._depth = 0
        self._outbox: List[Tuple[str, dict]] = []
        self._timer_wakeup = threading.Condition(self._lock)
        # The deadline the timer thread sleeps until (service clock); only an earlier new
        # deadline wakes it, so a stream of requests does not keep waking it for nothing.
        self._timer_due = math.inf
        self._stopping = threading.Event()
        self._timer_thread: Optional[threading.Thread] = None
        # Things, groups and tags; things with certificates are registered on sight.
        self.registry = Registry(store, things, clock)
        self._rollout_clock: Optional[rollouts.RolloutClock] = None
        if run_timers:
            self._timer_thread = threading.Thread(
                target=self._run_timers, name="jobs-timers", daemon=True
            )
            self._timer_thread.start()
            self._rollout_clock = rollouts.RolloutClock(self.release_rollouts)

    # plumbing

    def set_publisher(self, publish: Optional[Publisher]) -> None:
        """Where notifications go (the data plane's publish); None drops them."""
        with self._lock:
            self._publish = publish

    def close(self) -> None:
        """Stop the timer thread."""
        self._stopping.set()
        with self._lock:
            self._timer_wakeup.notify_all()
        if self._timer_thread is not None:
            self._timer_thread.join(5)
        if self._rollout_clock is not None:
            self._rollout_clock.stop()

    @contextlib.contextmanager
    def operation(self) -> Iterator[None]:
        """Hold the service lock; notifications queued inside leave when the outermost ends.

        The data plane publishes its reply inside an operation, so a device sees the
        ``/accepted`` reply before the notifications its request caused.
        """
        with self._lock:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    outbox, self._outbox = self._outbox, []
                    for topic, body in outbox:
                        self._send(topic, body)

    def publish(self, topic: str, body: dict) -> None:
        """Send one message now through the publisher (used for replies)."""
        self._send(topic, body)

    def _send(self, topic: str, body: dict) -> None:
        if self._publish is None:
            return
        try:
            self._publish(topic, body)
        except Exception:  # a transport failure must not undo a committed change
            log.exception("could not publish to %s", topic)

    def now(self) -> float:
        return self._clock()

    @contextlib.contextmanager
    def _watching(self, things: Iterable[str], namespace: str = "") -> Iterator[None]:
        """Compare each thing's pending queue before and after; queue notify / notify-next.

        Each namespace is a queue of its own, with its own notification topics
        (``notify-namespace-NS``, ``notify-next-namespace-NS``).
        """
        names = list(dict.fromkeys(things))
        before = {name: self.store.pending_shape(name, namespace) for name in names}
        yield
        now = self.now()
        suffix = f"-namespace-{namespace}" if namespace else ""
        for name in names:
            members, head = self.store.pending_shape(name, namespace)
            old_members, old_head = before[name]
            pending = None
            if members != old_members:
                pending = self.store.pending_executions(
                    name, limit=payloads.MAX_LISTED, namespace=namespace
                )
                self._outbox.append(
                    (
                        f"$aws/things/{name}/jobs/notify{suffix}",
                        payloads.notify_payload(pending, now),
                    )
                )
            if head != old_head:
                if pending is None:
                    pending = self.store.pending_executions(name, limit=1, namespace=namespace)
                first = pending[0] if pending else None
                job = self._for_device(self.store.get_job(first.job_id)) if first else None
                self._outbox.append(
                    (
                        f"$aws/things/{name}/jobs/notify-next{suffix}",
                        payloads.notify_next_payload(first, job, now),
                    )
                )

    # control plane

    def create_job(
        self,
        job_id: str,
        targets: Sequence[str],
        document: str,
        *,
        description: Optional[str] = None,
        in_progress_timeout_minutes: Optional[int] = None,
        retry_criteria: Sequence[RetryCriterion] = (),
        target_groups: Sequence[str] = (),
        target_selection: TargetSelection = TargetSelection.SNAPSHOT,
        namespace_id: Optional[str] = None,
        rollout: Optional[RolloutConfig] = None,
        abort_criteria: Sequence[AbortCriterion] = (),
    ) -> Job:
        """Queue an execution on each target thing and on each member of the target groups.

        A rollout queues them as its rate allows (``release_rollouts``); the rest waits.
        """
        validation.check_job_id(job_id)
        things = validation.check_targets(targets) if targets or not target_groups else []
        validation.check_document(document)
        validation.check_description(description)
        validation.check_in_progress_timeout(in_progress_timeout_minutes)
        criteria = validation.check_retry_criteria(retry_criteria)
        with self.operation():
            if self.store.get_job(job_id) is not None:
                raise ResourceAlreadyExistsError(f"Job {job_id} already exists.")
            direct = tuple(things)
            for group in target_groups:
                self.registry.group(group)
                things.extend(self.registry.members(group, recursive=True))
            things = list(dict.fromkeys(things))
            now = self.now()
            job = Job(
                job_id=job_id,
                document=document,
                targets=direct,
                status=JobStatus.IN_PROGRESS,
                created_at=now,
                last_updated_at=now,
                description=description,
                in_progress_timeout_minutes=in_progress_timeout_minutes,
                retry_criteria=criteria,
                target_groups=tuple(dict.fromkeys(target_groups)),
                target_selection=TargetSelection(target_selection),
                namespace_id=namespace_id,
                rollout=rollout,
                abort_criteria=tuple(abort_criteria),
            )
            with self.store.transaction():
                self.store.insert_job(job)
                if rollout is not None:
                    self.store.put_rollout(job_id, rollouts.starting_state(rollout, now))
                self._queue_executions(job, things, now)
                self._complete_job_if_done(job_id, now)
            log.info("job %s created for %s", job_id, ", ".join(things) or "no thing yet")
            return job

    def _queue_executions(self, job: Job, things: Sequence[str], now: float) -> None:
        """Queue a first execution of ``job`` on each thing, or plan it when a rollout runs."""
        if job.rollout is not None:
            self.store.plan_executions(job.job_id, list(things))
            self._release(job, now)
            if self._rollout_clock is not None:
                self._rollout_clock.wake()
            return
        self._insert_executions(job, things, now)

    def _insert_executions(self, job: Job, things: Sequence[str], now: float) -> None:
        namespace = job.namespace_id or ""
        with self._watching(things, namespace), self.store.transaction():
            for thing in things:
                self.store.insert_execution(
                    JobExecution(
                        job_id=job.job_id,
                        thing_name=thing,
                        status=ExecutionStatus.QUEUED,
                        execution_number=1,
                        version_number=1,
                        queued_at=now,
                        last_updated_at=now,
                        namespace=namespace,
                    )
                )

    def update_job(self, job_id: str, **changes: object) -> Job:
        """UpdateJob: replace the given fields (description, timeout, retries, rollout, abort)."""
        with self.operation():
            job = self._job(job_id)
            job = dataclasses.replace(job, last_updated_at=self.now(), **changes)  # type: ignore[arg-type]
            self.store.update_job(job)
            if job.rollout is not None and self.store.get_rollout(job_id) is None:
                self.store.put_rollout(job_id, rollouts.starting_state(job.rollout, self.now()))
            if self._rollout_clock is not None:
                self._rollout_clock.wake()
            self._abort_if_due(job_id)
            return job

    def delete_job_execution(
        self, job_id: str, thing_name: str, execution_number: int, *, force: bool = False
    ) -> None:
        """DeleteJobExecution: an IN_PROGRESS execution needs ``force``."""
        with self.operation():
            execution = self._execution(job_id, thing_name, execution_number)
            if execution.status is ExecutionStatus.IN_PROGRESS and not force:
                raise InvalidStateTransitionError(
                    f"Job execution {execution_number} of job {job_id} on {thing_name} is "
                    f"IN_PROGRESS; delete it with force"
                )
            with self._watching([thing_name], execution.namespace), self.store.transaction():
                self.store.delete_execution(job_id, thing_name, execution_number)
                self._complete_job_if_done(job_id, self.now())

    def describe_job(self, job_id: str) -> Job:
        with self._lock:
            return self._job(job_id)

    def list_jobs(self) -> Sequence[Job]:
        """Every job in creation order."""
        with self._lock:
            return self.store.list_jobs()

    def job_process_counts(self, job_id: str) -> Dict[ExecutionStatus, int]:
        with self._lock:
            self._job(job_id)
            counts = {status: 0 for status in ExecutionStatus}
            for execution in self.store.latest_executions_of_job(job_id):
                counts[execution.status] += 1
            return counts

    def cancel_job(
        self,
        job_id: str,
        *,
        force: bool = False,
        reason_code: Optional[str] = None,
        comment: Optional[str] = None,
    ) -> Job:
        with self.operation():
            job = self._job(job_id)
            if job.status is JobStatus.COMPLETED:
                raise InvalidRequestError(f"Job {job_id} is already completed.")
            if job.status is JobStatus.CANCELED and not force:
                raise InvalidRequestError(f"Job {job_id} is already canceled.")
            now = self.now()
            latest = self.store.latest_executions_of_job(job_id)
            self.store.unplan(job_id)
            with self._watching(
                (e.thing_name for e in latest), job.namespace_id or ""
            ), self.store.transaction():
                job = dataclasses.replace(
                    job,
                    status=JobStatus.CANCELED,
                    last_updated_at=now,
                    force_canceled=job.force_canceled or force,
                    reason_code=reason_code if reason_code is not None else job.reason_code,
                    comment=comment if comment is not None else job.comment,
                )
                self.store.update_job(job)
                for execution in latest:
                    if execution.status is ExecutionStatus.QUEUED or (
                        force and execution.status is ExecutionStatus.IN_PROGRESS
                    ):
                        self._cancel_execution(execution, now, force)
            log.info("job %s canceled%s", job_id, " with force" if force else "")
            return job

    def delete_job(self, job_id: str, *, force: bool = False) -> None:
        with self.operation():
            job = self._job(job_id)
            if job.status not in (JobStatus.COMPLETED, JobStatus.CANCELED) and not force:
                raise InvalidStateTransitionError(
                    f"Job {job_id} is {job.status.value}: only a COMPLETED or CANCELED job can "
                    f"be deleted without force"
                )
            executions = self.store.executions_of_job(job_id)
            running = [e for e in executions if e.status is ExecutionStatus.IN_PROGRESS]
            if running and not force:
                raise InvalidStateTransitionError(
                    f"Job {job_id} has executions in progress on "
                    f"{', '.join(e.thing_name for e in running)}; delete it with force"
                )
            with self._watching((e.thing_name for e in executions), job.namespace_id or ""):
                self.store.delete_job(job_id)
                self.registry.forget_tags(job.arn)
            log.info("job %s deleted%s", job_id, " with force" if force else "")

    def describe_job_execution(
        self, job_id: str, thing_name: str, execution_number: Optional[int] = None
    ) -> JobExecution:
        with self._lock:
            return self._execution(job_id, thing_name, execution_number)

    def list_job_executions_for_job(
        self, job_id: str, status: Optional[ExecutionStatus] = None
    ) -> Sequence[JobExecution]:
        with self._lock:
            self._job(job_id)
            executions = self.store.latest_executions_of_job(job_id)
        return [e for e in executions if status is None or e.status is status]

    def list_job_executions_for_thing(
        self, thing_name: str, status: Optional[ExecutionStatus] = None
    ) -> Sequence[JobExecution]:
        with self._lock:
            executions = self.store.latest_executions_of_thing(thing_name)
        return [e for e in executions if status is None or e.status is status]

    def cancel_job_execution(
        self,
        job_id: str,
        thing_name: str,
        *,
        force: bool = False,
        expected_version: Optional[int] = None,
        status_details: Optional[Mapping[str, str]] = None,
    ) -> None:
        details = None if status_details is None else validate_status_details(status_details)
        with self.operation():
            execution = self._execution(job_id, thing_name)
            if execution.status.terminal:
                raise with_execution(
                    InvalidStateTransitionError(
                        f"Job execution {job_id} on {thing_name} is already "
                        f"{execution.status.value}"
                    ),
                    execution,
                )
            if execution.status is ExecutionStatus.IN_PROGRESS and not force:
                raise with_execution(
                    InvalidStateTransitionError(
                        f"Job execution {job_id} on {thing_name} is IN_PROGRESS;"
                        " cancel it with force"
                    ),
                    execution,
                )
            check_version(execution, expected_version)
            now = self.now()
            if details is not None:
                execution = dataclasses.replace(execution, status_details=details)
            with self._watching([thing_name], execution.namespace), self.store.transaction():
                self._cancel_execution(execution, now, force)
                self._complete_job_if_done(job_id, now)
            log.info("job %s execution on %s canceled", job_id, thing_name)

    def known_things(self) -> Sequence[str]:
        return list(self._things())

    # internals (called with the lock held)

    def _for_device(self, job: Optional[Job]) -> Optional[Job]:
        """``job`` with the document a device is handed, e.g. fresh presigned URLs."""
        if job is None or self._device_document is None:
            return job
        return dataclasses.replace(job, document=self._device_document(job))

    def _job(self, job_id: str) -> Job:
        job = self.store.get_job(job_id)
        if job is None:
            raise ResourceNotFoundError(f"Job {job_id} does not exist")
        return job

    def _execution(
        self,
        job_id: str,
        thing_name: str,
        execution_number: Optional[int] = None,
        namespace: Optional[str] = None,
    ) -> JobExecution:
        """The execution; with ``namespace`` (device topics) only one of that namespace."""
        execution = self.store.get_execution(job_id, thing_name, execution_number)
        if execution is not None and namespace is not None and execution.namespace != namespace:
            execution = None
        if execution is None:
            number = "" if execution_number is None else f" number {execution_number}"
            raise ResourceNotFoundError(
                f"Job execution{number} of job {job_id} on thing {thing_name} does not exist"
            )
        return execution

    def _minutes(self, minutes: float) -> float:
        return minutes * self.minute_seconds

    def _step_deadline(
        self, execution: JobExecution, now: float, step_timeout_minutes: Optional[int]
    ) -> Optional[float]:
        if step_timeout_minutes is None:
            return execution.step_deadline
        if step_timeout_minutes == DISCARD_STEP_TIMER:
            return None
        return now + self._minutes(step_timeout_minutes)

    def _start(
        self,
        execution: JobExecution,
        job: Job,
        now: float,
        details: Optional[Mapping[str, str]],
        step_timeout_minutes: Optional[int],
    ) -> JobExecution:
        in_progress_deadline = None
        if job.in_progress_timeout_minutes is not None:
            in_progress_deadline = now + self._minutes(job.in_progress_timeout_minutes)
        started = dataclasses.replace(
            execution,
            status=ExecutionStatus.IN_PROGRESS,
            version_number=execution.version_number + 1,
            started_at=now,
            last_updated_at=now,
            status_details=execution.status_details if details is None else details,
            in_progress_deadline=in_progress_deadline,
            step_deadline=self._step_deadline(execution, now, step_timeout_minutes),
        )
        self.store.update_execution(started)
        self._wake_timer_for(started)
        return started

    def _wake_timer_for(self, execution: JobExecution) -> None:
        """Wake the timer thread when ``execution`` has a deadline before the one it waits for.

        Deadlines only ever get removed elsewhere: the timer finds nothing due then, which
        needs no early wake.
        """
        for deadline in (execution.in_progress_deadline, execution.step_deadline):
            if deadline is not None and deadline < self._timer_due:
                self._timer_wakeup.notify_all()
                return

    def _cancel_execution(self, execution: JobExecution, now: float, force: bool) -> None:
        self.store.update_execution(
            dataclasses.replace(
                execution,
                status=ExecutionStatus.CANCELED,
                last_updated_at=now,
                force_canceled=force and execution.status is ExecutionStatus.IN_PROGRESS,
                in_progress_deadline=None,
                step_deadline=None,
            )
        )

    def _after_terminal(self, execution: JobExecution, job: Job, now: float) -> None:
        """Queue a retry when the job's retry config asks for one; else maybe complete the job."""
        if job.status is JobStatus.IN_PROGRESS and self._should_retry(execution, job):
            retry = JobExecution(
                job_id=execution.job_id,
                thing_name=execution.thing_name,
                status=ExecutionStatus.QUEUED,
                execution_number=execution.execution_number + 1,
                version_number=1,
                queued_at=now,
                last_updated_at=now,
                retry_attempt=execution.retry_attempt + 1,
            )
            self.store.insert_execution(retry)
            log.info(
                "job %s on %s: %s, retry %s queued as execution %s",
                job.job_id,
                execution.thing_name,
                execution.status.value,
                retry.retry_attempt,
                retry.execution_number,
            )
            return
        self._complete_job_if_done(job.job_id, now)

    def _should_retry(self, execution: JobExecution, job: Job) -> bool:
        if execution.status not in (ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT):
            return False
        if execution.retry_attempt >= MAX_RETRIES_PER_EXECUTION:
            return False
        failure = RetryFailureType(execution.status.value)
        criterion = next((c for c in job.retry_criteria if c.failure_type is failure), None)
        if criterion is None:
            criterion = next(
                (c for c in job.retry_criteria if c.failure_type is RetryFailureType.ALL), None
            )
        if criterion is None:
            return False
        counted = (
            {ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT}
            if criterion.failure_type is RetryFailureType.ALL
            else {execution.status}
        )
        failures = sum(
            1
            for e in self.store.executions_of_job(job.job_id)
            if e.thing_name == execution.thing_name and e.status in counted
        )
        return failures <= criterion.number_of_retries

    def _complete_job_if_done(self, job_id: str, now: float) -> None:
        job = self.store.get_job(job_id)
        if job is None or job.status is not JobStatus.IN_PROGRESS or job.continuous:
            return
        if self.store.planned_count(job_id):
            return
        # Only a job's latest execution on a thing can be pending (a retry is made after
        # the one before ended), so "no pending execution" is "every latest one ended".
        if not self.store.has_pending_executions(job_id):
            self.store.update_job(
                dataclasses.replace(
                    job, status=JobStatus.COMPLETED, completed_at=now, last_updated_at=now
                )
            )
            log.info("job %s completed", job_id)

    # timers

    def expire_due(self) -> int:
        """Turn every IN_PROGRESS execution past a deadline TIMED_OUT; return how many."""
        with self.operation():
            now = self.now()
            expired = self.store.expired_executions(now)
            for execution in expired:
                job = self.store.get_job(execution.job_id)
                with self._watching(
                    [execution.thing_name], execution.namespace
                ), self.store.transaction():
                    timed_out = dataclasses.replace(
                        execution,
                        status=ExecutionStatus.TIMED_OUT,
                        last_updated_at=now,
                        in_progress_deadline=None,
                        step_deadline=None,
                    )
                    self.store.update_execution(timed_out)
                    if job is not None:
                        self._after_terminal(timed_out, job, now)
                self._abort_if_due(execution.job_id)
                log.info(
                    "job %s execution %s on %s TIMED_OUT",
                    execution.job_id,
                    execution.execution_number,
                    execution.thing_name,
                )
            return len(expired)

    def _run_timers(self) -> None:
        while not self._stopping.is_set():
            try:
                self.expire_due()
                with self._lock:
                    deadline = self.store.next_deadline()
                    wait = 3600.0 if deadline is None else max(0.0, deadline - self.now())
                    if wait > 0 and not self._stopping.is_set():
                        # Woken early by a change that sets an earlier deadline (_wake_timer_for).
                        self._timer_due = math.inf if deadline is None else deadline
                        self._timer_wakeup.wait(min(wait, 3600.0))
                    self._timer_due = -math.inf
            except Exception:
                log.exception("timer check failed; retrying in a second")
                self._stopping.wait(1.0)
