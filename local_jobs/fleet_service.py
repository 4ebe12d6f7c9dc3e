"""Part of ``LocalJobsService`` (service.py): the fleet operations, i.e. rollouts
(``jobExecutionsRolloutConfig``: when planned executions are queued), aborts (``abortConfig``),
thing groups and CONTINUOUS jobs (a thing joining or leaving a target group).

``FleetOperations`` is a base class of ``LocalJobsService`` and runs with its state and
helpers: ``store``, ``registry``, ``operation()``, ``now()``, ``minute_seconds``, ``_job``,
``_queue_executions``, ``_insert_executions``, ``_watching`` and ``cancel_job``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import (
    Dict,
    Optional,
    Sequence,
)

from local_jobs import rollouts
from local_jobs.model import (
    ExecutionStatus,
    InvalidRequestError,
    Job,
    JobStatus,
)

log = logging.getLogger("local_jobs.service")


class FleetOperations:
    """Rollouts, aborts, thing groups and CONTINUOUS jobs of ``LocalJobsService``."""

    # rollouts

    def release_rollouts(self) -> Optional[float]:
        """Queue what each rollout's rate allows now; seconds until the next window (or None)."""
        with self.operation():
            now = self.now()
            waits = []
            for job_id in self.store.rolling_jobs():
                job = self.store.get_job(job_id)
                if job is None or job.rollout is None or job.status is not JobStatus.IN_PROGRESS:
                    self.store.unplan(job_id)
                    continue
                state = self._release(job, now)
                if state is not None and self.store.planned_count(job_id):
                    waits.append(rollouts.next_window(state, self.minute_seconds) - now)
            return min(waits) if waits else None

    def _release(self, job: Job, now: float) -> Optional[rollouts.RolloutState]:
        state = self.store.get_rollout(job.job_id)
        if state is None or job.rollout is None:
            return None
        allowed, state = rollouts.quota(state, now, self.minute_seconds)
        things = self.store.planned_things(job.job_id, allowed) if allowed else []
        if things:
            with self.store.transaction():
                self.store.unplan(job.job_id, things)
                self._insert_executions(job, things, now)
                counts = self._counts(job.job_id)
                notified = sum(counts.values())
                state = rollouts.after_release(
                    job.rollout,
                    state,
                    len(things),
                    notified,
                    counts[ExecutionStatus.SUCCEEDED],
                )
                self.store.put_rollout(job.job_id, state)
            log.info("job %s: rollout queued %d more", job.job_id, len(things))
        else:
            self.store.put_rollout(job.job_id, state)
        return state

    def _counts(self, job_id: str) -> Dict[ExecutionStatus, int]:
        counts = {status: 0 for status in ExecutionStatus}
        for execution in self.store.latest_executions_of_job(job_id):
            counts[execution.status] += 1
        return counts

    def _abort_if_due(self, job_id: str) -> None:
        """Cancel the job when its abortConfig's criteria are met."""
        job = self.store.get_job(job_id)
        if job is None or not job.abort_criteria or job.status is not JobStatus.IN_PROGRESS:
            return
        criterion = rollouts.abort_criterion(job.abort_criteria, self._counts(job_id))
        if criterion is None:
            return
        log.info("job %s: abort criterion %s met; canceling", job_id, criterion)
        self.cancel_job(
            job_id,
            reason_code=rollouts.abort_reason_code(criterion),
            comment=(
                f"Canceled by abortConfig: {criterion.failure_type} executions reached "
                f"{criterion.threshold_percentage}% of at least "
                f"{criterion.min_executed_things} executed things"
            ),
        )

    # thing groups and CONTINUOUS jobs

    def add_thing_to_group(self, group: str, thing: str) -> None:
        """AddThingToThingGroup; a CONTINUOUS job that targets the group (or a parent of it)
        gets an execution on the thing if it has none."""
        with self.operation():
            if not self.registry.add_member(group, thing):
                return
            now = self.now()
            groups = set(self.registry.groups_of(thing))
            for job in self.store.continuous_jobs_in_progress():
                if (
                    groups.intersection(job.target_groups)
                    and self.store.get_execution(job.job_id, thing) is None
                    and thing not in self.store.planned_things(job.job_id)
                ):
                    self._queue_executions(job, [thing], now)
                    log.info("job %s: %s joined group %s", job.job_id, thing, group)

    def remove_thing_from_group(self, group: str, thing: str) -> None:
        """RemoveThingFromThingGroup; a QUEUED execution of a CONTINUOUS job that no longer
        targets the thing becomes REMOVED."""
        with self.operation():
            if not self.registry.remove_member(group, thing):
                return
            now = self.now()
            groups = set(self.registry.groups_of(thing))
            for job in self.store.continuous_jobs_in_progress():
                if thing in job.targets:
                    continue
                if groups.intersection(job.target_groups):
                    continue
                self.store.unplan(job.job_id, [thing])
                execution = self.store.get_execution(job.job_id, thing)
                if execution is not None and execution.status is ExecutionStatus.QUEUED:
                    with self._watching([thing], execution.namespace), self.store.transaction():
                        self.store.update_execution(
                            dataclasses.replace(
                                execution, status=ExecutionStatus.REMOVED, last_updated_at=now
                            )
                        )

    def associate_targets(
        self, job_id: str, things: Sequence[str], groups: Sequence[str], comment: Optional[str]
    ) -> Job:
        """AssociateTargetsWithJob: more targets for an IN_PROGRESS CONTINUOUS job."""
        with self.operation():
            job = self._job(job_id)
            if not job.continuous:
                raise InvalidRequestError(
                    f"Job {job_id} is a SNAPSHOT job: targets can be added only to a "
                    f"CONTINUOUS job"
                )
            if job.status is not JobStatus.IN_PROGRESS:
                raise InvalidRequestError(
                    f"Job {job_id} is {job.status.value}: targets can be added only while it "
                    f"is IN_PROGRESS"
                )
            new_things = [t for t in things if t not in job.targets]
            new_groups = [g for g in groups if g not in job.target_groups]
            if len(job.targets) + len(job.target_groups) + len(new_things) + len(new_groups) > 100:
                raise InvalidRequestError(f"Job {job_id} would have more than 100 targets")
            for group in new_groups:
                self.registry.group(group)
            now = self.now()
            job = dataclasses.replace(
                job,
                targets=job.targets + tuple(new_things),
                target_groups=job.target_groups + tuple(new_groups),
                last_updated_at=now,
                comment=comment if comment is not None else job.comment,
            )
            reached = list(new_things)
            for group in new_groups:
                reached += self.registry.members(group, recursive=True)
            fresh = [
                t
                for t in dict.fromkeys(reached)
                if self.store.get_execution(job_id, t) is None
                and t not in self.store.planned_things(job_id)
            ]
            with self.store.transaction():
                self.store.update_job(job)
                self._queue_executions(job, fresh, now)
            return job
