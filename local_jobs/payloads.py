"""The JSON shapes of the device API (jobs-api.md §1.3-1.6), built from model values."""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Sequence

from local_jobs.model import ExecutionStatus, Job, JobExecution

MAX_LISTED = 10  # DG:job-limits (no scheduling config): get and notify list at most 10


def seconds(value: Optional[float]) -> Optional[int]:
    """Timestamps on the device API are whole seconds since the epoch (jobs-api.md §1.12)."""
    return None if value is None else int(value)


def job_document(job: Job) -> Any:
    """The document as a JSON value: over MQTT it is an object, not a string (jobs-api.md §1.4)."""
    return json.loads(job.document)


def execution_summary(execution: JobExecution) -> Dict[str, Any]:
    """JobExecutionSummary: no status, no document (the enclosing list names the status)."""
    body: Dict[str, Any] = {"jobId": execution.job_id, "queuedAt": seconds(execution.queued_at)}
    if execution.started_at is not None:
        body["startedAt"] = seconds(execution.started_at)
    body["lastUpdatedAt"] = seconds(execution.last_updated_at)
    body["versionNumber"] = execution.version_number
    body["executionNumber"] = execution.execution_number
    return body


def execution_state(execution: JobExecution) -> Dict[str, Any]:
    """JobExecutionState: status, statusDetails, versionNumber."""
    return {
        "status": execution.status.value,
        "statusDetails": dict(execution.status_details),
        "versionNumber": execution.version_number,
    }


def execution_body(
    execution: JobExecution, job: Optional[Job], now: float, include_document: bool = True
) -> Dict[str, Any]:
    """JobExecution as start-next, describe and notify-next carry it.

    ``thingName`` is left out: real responses omit it (jobs-api.md §1.2).
    """
    body: Dict[str, Any] = {
        "jobId": execution.job_id,
        "status": execution.status.value,
        "statusDetails": dict(execution.status_details),
        "queuedAt": seconds(execution.queued_at),
    }
    if execution.started_at is not None:
        body["startedAt"] = seconds(execution.started_at)
    body["lastUpdatedAt"] = seconds(execution.last_updated_at)
    body["versionNumber"] = execution.version_number
    body["executionNumber"] = execution.execution_number
    remaining = execution.approximate_seconds_before_timed_out(now)
    if remaining is not None:
        body["approximateSecondsBeforeTimedOut"] = remaining
    if include_document and job is not None:
        body["jobDocument"] = job_document(job)
    return body


def pending_lists(pending: Sequence[JobExecution]) -> Dict[str, list]:
    """Split pending executions (IN_PROGRESS first) into the two summary lists, at most 10."""
    listed = list(pending)[:MAX_LISTED]
    return {
        "IN_PROGRESS": [
            execution_summary(e) for e in listed if e.status is ExecutionStatus.IN_PROGRESS
        ],
        "QUEUED": [execution_summary(e) for e in listed if e.status is ExecutionStatus.QUEUED],
    }


def notify_payload(pending: Sequence[JobExecution], now: float) -> Dict[str, Any]:
    """ListNotification: ``{"timestamp", "jobs": {"IN_PROGRESS": [...], "QUEUED": [...]}}``.

    Empty lists are left out, so an empty pending set gives ``"jobs": {}`` (DG example).
    """
    jobs = {k: v for k, v in pending_lists(pending).items() if v}
    return {"timestamp": seconds(now), "jobs": jobs}


def notify_next_payload(
    head: Optional[JobExecution], job: Optional[Job], now: float
) -> Dict[str, Any]:
    """NextNotification: the new head with its document, or no ``execution`` when none is left."""
    body: Dict[str, Any] = {"timestamp": seconds(now)}
    if head is not None:
        body["execution"] = execution_body(head, job, now)
    return body
