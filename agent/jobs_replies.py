"""What the Jobs service says, read by the job client's protocol thread: notifications, the
replies to start-next and to updates (jobs-api.md). ``ServiceReplies`` is the part of
``JobClient`` (job_client.py) that handles them; it reads and changes the protocol state
JobClient owns and asks JobClient what to do with a claimed execution (``_carry_out``).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, Optional

from agent.job import Status
from agent.jobs_state import (
    GONE_CODES,
    RETRYABLE_CODES,
    RUN_ID_KEY,
    SERVICE_TERMINAL_STATUSES,
    Execution,
    JobPhase,
    Mode,
    Request,
    RequestKind,
    text_or_none,
)
from agent.recovery import Claim, Ledger, decide

log = logging.getLogger("job_client")  # one logger for the job client's lines, as before


class ServiceReplies:
    """Handles the service's messages for ``JobClient``: a base class of it, never used alone.

    Uses JobClient's ``_back_off``, ``_forget_vanished``, ``_dispatch_verdict``,
    ``_carry_out``, ``_finish`` and ``_job_gone``.
    """

    # Protocol state, owned by JobClient (set in its __init__).
    thing_name: str
    _prefix: str
    _inflight: Optional[Request]
    _claim_ahead: Optional[Request]
    _job: Optional[Execution]
    _claim_wanted: bool
    _failures: int
    _ledger: Ledger
    _run_id: str
    _max_attempts: int
    _mode: Mode

    def _on_message(self, topic: str, payload: Dict[str, Any], cut: bool) -> None:
        if not topic.startswith(self._prefix):
            log.warning("ignoring a message on %s: not for thing %s", topic, self.thing_name)
            return
        suffix = topic[len(self._prefix) :]
        if suffix == "notify-next":
            self._on_notify_next(payload)
        elif suffix in ("start-next/accepted", "start-next/rejected"):
            request = self._take_reply(RequestKind.CLAIM, payload, None)
            if request is None:
                return
            if suffix.endswith("accepted"):
                self._on_claim_accepted(payload, cut)
            else:
                self._on_claim_rejected(payload)
        else:
            parts = suffix.split("/")
            if len(parts) == 3 and parts[1] == "update" and parts[2] in ("accepted", "rejected"):
                request = self._take_reply(RequestKind.UPDATE, payload, parts[0])
                if request is None:
                    return
                if parts[2] == "accepted":
                    self._on_update_accepted(request, payload)
                else:
                    self._on_update_rejected(request, payload)
                if self._claim_ahead is not None:
                    # The final status is not settled (a resend follows): the answer to the
                    # start-next sent behind it would be stale; claim again after the job.
                    log.debug("job %s: dropping the start-next sent ahead", request.job.job_id)
                    self._claim_ahead = None
            else:
                log.debug("ignoring a message on %s", topic)

    def _take_reply(
        self, kind: RequestKind, payload: Dict[str, Any], job_id: Optional[str]
    ) -> Optional[Request]:
        """The in-flight request this reply answers, now no longer in flight; else None."""
        request = self._inflight
        token = payload.get("clientToken")
        ahead = self._claim_ahead
        if ahead is not None and kind is RequestKind.CLAIM and token == ahead.token:
            # Answered before the final update it rode with: its answer may predate that
            # update (it may even hand back the same job), so claim again after the job.
            log.debug("start-next answered before the final update; claiming again after it")
            self._claim_ahead = None
            return None
        if request is None or request.kind is not kind or token != request.token:
            log.debug("ignoring a %s reply with token %r: not awaited", kind.value, token)
            return None
        if job_id is not None and (request.job is None or request.job.job_id != job_id):
            log.warning("ignoring an update reply for job %s: not the job in hand", job_id)
            return None
        self._inflight = None
        return request

    def _on_notify_next(self, payload: Dict[str, Any]) -> None:
        execution = payload.get("execution")
        next_id = execution.get("jobId") if isinstance(execution, dict) else None
        job = self._job
        if job is None:
            if next_id is not None:
                log.debug("notify-next: job %s is next", next_id)
                self._claim_wanted = True
        elif next_id != job.job_id and job.phase is JobPhase.RUNNING:
            # The head of the queue is no longer our job: it may have been canceled.
            job.check_wanted = True

    def _on_claim_rejected(self, payload: Dict[str, Any]) -> None:
        code, message = text_or_none(payload.get("code")), text_or_none(payload.get("message"))
        if code in RETRYABLE_CODES:
            log.warning("start-next rejected (%s: %s); will retry", code, message)
            self._claim_wanted = True
            self._back_off(time.monotonic())
        else:
            # Retrying a request the service refuses would only repeat the refusal; the next
            # notification, reconnect or poll tries again.
            log.error("start-next rejected (%s: %s)", code, message)

    def _on_claim_accepted(self, payload: Dict[str, Any], cut: bool) -> None:
        self._failures = 0
        execution = payload.get("execution")
        interrupted = self._ledger.current
        if not isinstance(execution, dict):
            log.debug("start-next: no pending job")
            if interrupted is not None:
                self._forget_vanished(interrupted)
            return
        try:
            job_id = str(execution["jobId"])
            execution_number = int(execution["executionNumber"])
            version = int(execution["versionNumber"])
        except (KeyError, TypeError, ValueError):
            log.error(
                "start-next reply without jobId/executionNumber/versionNumber (keys: %s)",
                ", ".join(sorted(map(str, execution))),
            )
            return
        if interrupted is not None and interrupted.key != (job_id, execution_number):
            self._forget_vanished(interrupted)
        job = Execution(job_id, execution_number, version, last_update_at=time.monotonic())
        job.document = execution.get("jobDocument")
        job.document_cut = cut
        self._job = job
        details = execution.get("statusDetails")
        claimed_by = text_or_none(details.get(RUN_ID_KEY)) if isinstance(details, dict) else None
        decision = decide(
            Claim(job_id, execution_number, claimed_by),
            self._ledger.state,
            self._run_id,
            self._ledger.trusted,
            lambda resumed: self._dispatch_verdict(job, resumed),
            self._max_attempts,
            stopping=self._mode is Mode.STOPPING,
        )
        self._carry_out(job, decision)

    def _on_update_accepted(self, request: Request, payload: Dict[str, Any]) -> None:
        job = request.job
        assert job is not None and request.status is not None
        self._failures = 0
        state = payload.get("executionState")
        if isinstance(state, dict) and isinstance(state.get("versionNumber"), int):
            job.version = state["versionNumber"]
        else:
            job.version += 1
        job.last_update_at = time.monotonic()
        if request.status is Status.IN_PROGRESS:
            log.debug("job %s: IN_PROGRESS accepted (version %d)", job.job_id, job.version)
            return
        log.info("job %s: reported %s", job.job_id, request.status.value)
        self._finish(job)

    def _on_update_rejected(self, request: Request, payload: Dict[str, Any]) -> None:
        job = request.job
        assert job is not None and request.status is not None
        code, message = text_or_none(payload.get("code")), text_or_none(payload.get("message"))
        state = payload.get("executionState")
        service_status = text_or_none(state.get("status")) if isinstance(state, dict) else None
        now = time.monotonic()
        if (
            job.phase is JobPhase.FINAL
            and request.status is job.final.status
            and service_status == job.final.status.value
        ):
            # An earlier attempt whose reply we missed was applied.
            log.info("job %s: reported %s (found already recorded)", job.job_id, service_status)
            self._finish(job)
        elif code == "VersionMismatch" and service_status not in SERVICE_TERMINAL_STATUSES:
            if isinstance(state, dict) and isinstance(state.get("versionNumber"), int):
                job.version = state["versionNumber"]
                log.info("job %s: version is %d; sending again", job.job_id, job.version)
            self._failures += 1
            if self._failures > 2:
                self._back_off(now)
            self._resend_later(job, request)
        elif code in GONE_CODES or code == "VersionMismatch":
            status_text = f", status {service_status}" if service_status else ""
            self._job_gone(job, f"the service refused the update ({code}{status_text}: {message})")
        elif code in RETRYABLE_CODES:
            log.warning("job %s: update rejected (%s: %s); will retry", job.job_id, code, message)
            self._back_off(now)
            self._resend_later(job, request)
        elif job.phase is JobPhase.FINAL and request.status is job.final.status:
            job.final_fallback += 1
            if job.final_fallback > 2:
                log.error(
                    "job %s: the service refuses final status %s (%s: %s); giving up; the "
                    "step timeout will end it",
                    job.job_id,
                    request.status.value,
                    code,
                    message,
                )
                self._finish(job)
            else:
                log.error(
                    "job %s: final status refused (%s: %s); sending it with fewer details",
                    job.job_id,
                    code,
                    message,
                )
        else:
            log.error(
                "job %s: IN_PROGRESS update refused (%s: %s); dropped", job.job_id, code, message
            )
            job.last_update_at = now  # do not retry the same heartbeat at once

    def _resend_later(self, job: Execution, request: Request) -> None:
        if request.status is Status.IN_PROGRESS and job.phase is not JobPhase.FINAL:
            job.check_wanted = True
