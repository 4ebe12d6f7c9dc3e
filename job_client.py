"""Speak the AWS IoT Jobs device protocol over AWSIoTPythonSDK and run one job at a time.

    job_client = JobClient(mqtt_client, thing_name, journal=Journal(state_dir))
    job_client.add_handler(get_job_type, "APT_UPDATE", execute_apt_update)
    job_client.start()
    ...
    job_client.stop()

Threads. SDK callbacks only parse and enqueue: the SDK calls them one at a time on its own
thread, and a synchronous SDK call made inside one deadlocks. The ``jobs-protocol`` thread owns
all protocol state: it connects, subscribes, claims work, sends updates and reads replies. The
``jobs-worker`` thread runs handlers, so replies, progress updates and heartbeats keep flowing
while a long job runs. Both block on queues; timers are queue timeouts.

Protocol (../shared/jobs-api.md). Work is claimed with start-next at start, on every
reconnect, whenever ``notify-next`` hints that work may be waiting while we are idle, after
every finished job, and every ``poll_interval_seconds`` while idle as a safety net (``notify``
is not subscribed: a job queued behind a running one is claimed after it, and a canceled
job changes the head of the queue, which ``notify-next`` reports).
One request is in flight at a time, each with a fresh ``clientToken``, with one exception: the
start-next for the next job is sent right behind a final update, so that the service answers
both in one round trip (``_claim_ahead``). It counts only once the final status is settled
(accepted, or the execution found ended); if the final update's reply is lost or refused, or
start-next is answered first, its answer is dropped and start-next is sent again after the
job. A reply to any other token, for another job or on another thing's topic is ignored.
Updates are QoS 1 with ``expectedVersion`` from the last accepted state; ``VersionMismatch``
is recovered from the ``executionState`` the service returns; ``RequestThrottled``,
``InternalError`` and silence are retried with capped exponential backoff. An update
rejected with ``InvalidStateTransition``, ``TerminalStateReached`` or ``ResourceNotFound``
means the service ended the execution (canceled, timed out, deleted): the client stops
reporting for it, tells the handler through ``JobContext.should_stop()`` and moves on once
the handler returns.

Statuses. IN_PROGRESS with the handler's progress (throttled) and ``stepTimeoutInMinutes``
heartbeats; SUCCEEDED only when the handler returned; FAILED with a ``reason`` when it raised;
REJECTED with a ``reason`` for a document no handler accepts, a document that is not a JSON
object, or ``JobRejected``.

Crash safety (agent/journal.py). Before a handler starts, the execution is recorded as
RUNNING; a final status is recorded before it is sent and forgotten only once the service
accepted it (or said the execution is terminal or gone). After a restart the pending final
status is delivered first. An interrupted execution (RUNNING in the journal, and start-next
hands it back) is run again when its handler is ``safe_to_rerun``, up to ``max_attempts``
starts in all, else reported FAILED with the reason "interrupted by agent restart".

Stopping. ``stop()`` takes no new job and tells the running handler (``should_stop()``,
``stop_cause`` ``StopReason.AGENT_STOPPING``). A job is never reported FAILED because the agent
stops: a handler that finishes within the grace period reports as usual; one that leaves work
running (raises ``JobHandedOver``, as the APT handler does while dpkg runs) is handed to the
next start; one still running when the grace period ends is handed over too, its journal
record left RUNNING, so the next start, which knows the run was interrupted, runs it again
when its handler is ``safe_to_rerun`` or reports it FAILED "interrupted by agent restart".
A second ``stop()`` with a shorter grace period (jobs_agent.py: a second SIGTERM or SIGINT)
ends the grace period at once.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from agent.activity import Activity
from agent.dispatch import Filter, Handlers, Registration, document_problem
from agent.errors import JobError, JobFailed, JobHandedOver, JobRejected
from agent.job import (
    Handler,
    JobContext,
    Outcome,
    Status,
    StopReason,
    failure_details,
    outcome_of_error,
)
from agent.jobs_replies import ServiceReplies
from agent.jobs_state import (
    RUN_ID_KEY,
    SUBSCRIPTIONS,
    Event,
    Execution,
    JobPhase,
    Mode,
    Request,
    RequestKind,
    Send,
)
from agent.journal import JobRecord, Journal, Phase
from agent.messages import parse_message
from agent.mqtt import JobsConnection
from agent.recovery import (
    INTERRUPTED_REASON,
    Action,
    Decision,
    Ledger,
    final_outcome,
)
from agent.status_details import fit_status_details

__all__ = [
    "JobClient",
    "JobContext",
    "JobFailed",
    "JobHandedOver",
    "JobRejected",
    "Outcome",
    "Status",
    "StopReason",
]

log = logging.getLogger(__name__)

# Checks a claimed document before any filter or handler sees it: returns the document to
# dispatch (e.g. without a signature field) or raises JobRejected/JobFailed with the reason.
# Called as gate(job_id, document), plus the keyword resumed=True for an execution the journal
# shows a handler already ran (resumed after an agent restart; it passed the gate before):
# agent/signing.py's DocumentGate then skips the expiry.
DocumentGate = Callable[..., Dict[str, Any]]

class JobClient(ServiceReplies):
    """Runs AWS IoT Jobs for one thing, one at a time, through registered handlers.

    ``mqtt_client`` is a configured, not yet connected ``AWSIoTMQTTClient`` (see
    agent/mqtt.py); the client connects it, sets its ``onOnline``/``onOffline`` and
    disconnects it in ``stop()``. Without a ``journal`` nothing survives a restart.

    Health, for a watchdog: ``ready`` (set once connected, subscribed and the first claim
    sent), ``is_connected()``, ``last_online`` (``time.monotonic()`` of the last connect) and
    ``offline_seconds()``. ``explain_connection_failure`` may return why connecting fails
    (such as an expired certificate), added to the log lines about it.
    """

    def __init__(
        self,
        mqtt_client: Any,
        thing_name: str,
        *,
        journal: Optional[Journal] = None,
        step_timeout_minutes: int = 10,
        heartbeat_seconds: Optional[float] = None,
        progress_interval_seconds: float = 5.0,
        shutdown_grace_seconds: float = 60.0,
        request_timeout_seconds: float = 10.0,
        retry_max_seconds: float = 30.0,
        poll_interval_seconds: float = 600.0,
        max_attempts: int = 3,
        keepalive_seconds: int = 60,
        on_ready: Optional[Callable[[], None]] = None,
        explain_connection_failure: Optional[Callable[[], Optional[str]]] = None,
        document_gate: Optional[DocumentGate] = None,
        activity: Optional[Activity] = None,
    ) -> None:
        if not thing_name:
            raise ValueError("thing_name must not be empty")
        if not 1 <= step_timeout_minutes <= 10080:
            raise ValueError(f"step_timeout_minutes must be 1-10080, got {step_timeout_minutes}")
        if heartbeat_seconds is None:
            heartbeat_seconds = step_timeout_minutes * 60.0 / 3
        if not 0 < heartbeat_seconds < step_timeout_minutes * 60.0:
            raise ValueError(
                f"heartbeat_seconds must be below the step timeout, got {heartbeat_seconds}"
            )
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self._link = JobsConnection(
            mqtt_client,
            keepalive_seconds=keepalive_seconds,
            explain_failure=explain_connection_failure,
        )
        self.thing_name = thing_name
        self._step_timeout_minutes = step_timeout_minutes
        self._heartbeat_seconds = heartbeat_seconds
        self._progress_interval = progress_interval_seconds
        self._grace_seconds = shutdown_grace_seconds
        self._request_timeout = request_timeout_seconds
        self._retry_max = retry_max_seconds
        self._poll_interval = poll_interval_seconds
        self._max_attempts = max_attempts
        self._on_ready = on_ready
        self._document_gate = document_gate
        self._activity = activity if activity is not None else Activity()
        self._prefix = f"$aws/things/{thing_name}/jobs/"
        self._handlers = Handlers()
        self._run_id = uuid.uuid4().hex[:12]

        self.ready = threading.Event()
        self.last_online: Optional[float] = None
        self._online = False
        self._offline_since = time.monotonic()
        # SimpleQueue (C, no Python-level locks): a job passes through each several times.
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._stop_requested = threading.Event()
        self._protocol_thread: Optional[threading.Thread] = None
        self._worker_thread: Optional[threading.Thread] = None

        # Protocol state: touched only by the protocol thread once started.
        self._ledger = Ledger(journal)
        self._job: Optional[Execution] = None
        self._worker_busy = False
        self._worker_job_id = ""
        self._inflight: Optional[Request] = None
        self._claim_ahead: Optional[Request] = None  # start-next sent behind a final update
        self._claim_wanted = True
        self._failures = 0
        self._retry_at = 0.0
        self._next_poll_at = 0.0
        self._mode = Mode.CONNECTING
        self._stop_deadline = 0.0
        self._stop_started = 0.0
        self._final_deadline: Optional[float] = None
        # Activity calls of this loop turn, made once its requests are sent (_tell_activity).
        self._untold: List[Tuple[Callable[..., None], Tuple[Any, ...]]] = []

    # public API

    def add_handler(
        self,
        filter: Filter,  # the name the original example used
        value: Any,
        handler: Handler,
        *,
        safe_to_rerun: Optional[bool] = None,
    ) -> None:
        """Run ``handler`` for documents where ``filter(document) == value``; the first
        registration that matches wins.

        ``safe_to_rerun=None`` takes ``handler.safe_to_rerun`` (default False): whether a run
        interrupted by an agent restart may be started again. Raises TypeError for a filter or
        handler that is not callable, RuntimeError after ``start()``.
        """
        if self._protocol_thread is not None:
            raise RuntimeError("add_handler() must be called before start()")
        self._handlers.add(filter, value, handler, safe_to_rerun)

    def start(self) -> None:
        """Start the protocol and worker threads and return at once.

        The protocol thread connects (retrying with backoff until ``stop()``), subscribes,
        delivers any final status the journal holds and claims work. Raises RuntimeError when
        called twice, OSError when the journal cannot be written.
        """
        if self._protocol_thread is not None:
            raise RuntimeError("JobClient already started")
        self._ledger.open()
        self._restore_pending_final()
        self._link.on_state(self._sdk_online, self._sdk_offline)
        self._worker_thread = threading.Thread(target=self._work_loop, name="jobs-worker")
        self._worker_thread.daemon = True  # a hung handler must not keep the process alive
        self._protocol_thread = threading.Thread(target=self._protocol_main, name="jobs-protocol")
        self._protocol_thread.daemon = True  # stop() joins it; an unexpected exit must not hang
        self._worker_thread.start()
        self._protocol_thread.start()

    def stop(self, grace_seconds: Optional[float] = None, *, wait: bool = True) -> None:
        """Take no new job, tell the running handler to stop (``StopReason.AGENT_STOPPING``)
        and let it finish within ``grace_seconds`` (default: the constructor's
        ``shutdown_grace_seconds``); deliver the final status if the service answers in time,
        and disconnect. A handler still running when the grace period ends is handed over to
        the next start, never reported FAILED for the stop. Calling ``stop`` again with a
        shorter grace period (a second SIGTERM) ends the grace period sooner.

        With ``wait`` (the default) returns once all that is done; else at once (see
        ``wait_stopped``)."""
        grace = self._grace_seconds if grace_seconds is None else grace_seconds
        self._stop_requested.set()
        self._events.put((Event.STOP, grace))
        if wait and not self.wait_stopped(self.stop_timeout(grace)):
            log.error("protocol thread did not stop in time")

    def stop_timeout(self, grace_seconds: float) -> float:
        """How long a stop with ``grace_seconds`` may take at most: the grace period, then the
        final status's requests and the disconnect."""
        return grace_seconds + 3 * self._request_timeout + 30

    def wait_stopped(self, timeout: Optional[float] = None) -> bool:
        """Wait up to ``timeout`` seconds for the client to stop; True once it has."""
        thread = self._protocol_thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def is_connected(self) -> bool:
        """True while the MQTT connection is up."""
        return self._online

    def offline_seconds(self) -> float:
        """Seconds since the connection went down (or since start); 0 while connected."""
        return 0.0 if self._online else time.monotonic() - self._offline_since

    def is_alive(self) -> bool:
        """True while the protocol thread runs."""
        return self._protocol_thread is not None and self._protocol_thread.is_alive()

    # SDK callbacks: parse and enqueue only (they run on the SDK's single callback thread)

    def _sdk_online(self) -> None:
        self._online = True
        self.last_online = time.monotonic()
        self._events.put((Event.ONLINE, None))

    def _sdk_offline(self) -> None:
        self._online = False
        self._offline_since = time.monotonic()
        self._events.put((Event.OFFLINE, None))

    def _sdk_message(self, client: Any, userdata: Any, message: Any) -> None:
        # Whatever arrives, nothing may escape: an exception here kills the SDK's only
        # dispatch thread (parse_message raises nothing but ValueError).
        try:
            payload, cut = parse_message(bytes(message.payload))
        except ValueError as error:
            log.warning("ignoring a message on %s: %s", message.topic, error)
            return
        self._events.put((Event.MESSAGE, (message.topic, payload, cut)))

    # worker thread

    def _work_loop(self) -> None:
        while True:
            job = self._work.get()
            if job is None:
                return
            outcome = self._run_matching_handler(job)
            self._events.put((Event.DONE, (job, outcome)))

    def _run_matching_handler(self, job: Execution) -> Outcome:
        """Run the handler of the first registration whose filter matched the document (chosen
        in ``_begin``): the one place every handler exception is caught."""
        registration, context = job.registration, job.context
        assert registration is not None and context is not None
        context.log.info("started (attempt %d)", job.attempt)
        try:
            result = registration.handler(job.document, context)
        except JobHandedOver as error:
            context.log.info("handed over to the next start: %s", error.reason)
            return Outcome(Status.IN_PROGRESS, failure_details(error.reason, None))
        except JobError as error:
            outcome = outcome_of_error(error)
            context.log.info("%s: %s", outcome.status.value, error.reason)
            return outcome
        except (Exception, SystemExit) as error:  # the job boundary: any bug becomes FAILED
            context.log.exception("handler raised %s", type(error).__name__)
            return Outcome.failed(f"{type(error).__name__}: {error}", "HANDLER_ERROR")
        if result is None:
            result = {}
        if not isinstance(result, Mapping):
            context.log.warning("handler returned %s, not a mapping", type(result).__name__)
            result = {"result": str(result)}
        return Outcome(Status.SUCCEEDED, fit_status_details(result))

    # protocol thread

    def _protocol_main(self) -> None:
        try:
            if self._connect():
                self._loop()
        finally:
            self._shut_down()

    def _connect(self) -> bool:
        """Connect and subscribe, retrying with backoff; False when stopped first."""
        self._activity.connecting(None)
        topics = [self._prefix + suffix for suffix in SUBSCRIPTIONS]
        if not self._link.connect(
            topics, self._sdk_message, self._stop_requested, self._activity.connecting
        ):
            return False
        log.info("connected; listening for jobs for thing %s", self.thing_name)
        self._activity.connected()
        return True

    def _shut_down(self) -> None:
        self._save_unsaved(force=True)
        self._tell_activity()
        if self._mode is not Mode.CONNECTING or self._online:
            self._link.disconnect()
        self._online = False
        self._work.put(None)
        if self._worker_busy:
            log.info("job %s: handler still running at exit", self._worker_job_id)
        elif self._worker_thread is not None:
            self._worker_thread.join(5)
        log.info("job client stopped")

    def _loop(self) -> None:
        self._mode = Mode.LISTENING
        while not self._done_stopping():
            timeout = self._next_wakeup()
            try:
                event = self._events.get(timeout=timeout)
            except queue.Empty:
                event = None
            while event is not None:
                self._handle(*event)
                try:
                    event = self._events.get_nowait()
                except queue.Empty:
                    event = None
            now = time.monotonic()
            self._on_timers(now)
            self._pump(now)
            self._save_unsaved()
            self._tell_activity()

    def _next_wakeup(self) -> Optional[float]:
        """Seconds until the nearest timer, or None to block until an event."""
        # Every time listed here must move forward once acted on, or the loop would spin;
        # while offline only the ONLINE event (and deadlines of the stop) can help.
        now = time.monotonic()
        times = []
        job = self._job
        if self._inflight is not None:
            times.append(self._inflight.deadline)
        elif self._online:
            wanted = self._next_send(now)
            if wanted is not None:
                times.append(max(self._retry_at, wanted[0]))
            if job is None and self._mode is not Mode.STOPPING:
                times.append(self._next_poll_at)
        if self._mode is Mode.STOPPING:
            if job is not None and job.phase is JobPhase.RUNNING and self._worker_busy:
                times.append(self._stop_deadline)
            if self._final_deadline is not None:
                times.append(self._final_deadline)
        if not times:
            return None
        return max(0.0, min(times) - now)

    def _next_send(self, now: float) -> Optional[Tuple[float, Send]]:
        """The request to send next and when it is due (None: nothing to send): the one place
        that decides it (``_next_wakeup`` waits for it, ``_pump`` sends it)."""
        job = self._job
        if job is None:
            if self._claim_wanted and self._mode is not Mode.STOPPING:
                return now, Send.CLAIM
            return None
        if job.phase is JobPhase.FINAL:
            return now, Send.FINAL
        if job.phase is JobPhase.GONE or not self._worker_busy:
            return None
        heartbeat_at = now if job.check_wanted else job.last_update_at + self._heartbeat_seconds
        context = job.context
        if context is not None and context._has_unsent():
            if job.next_progress_at <= max(now, heartbeat_at):
                return job.next_progress_at, Send.PROGRESS
        return heartbeat_at, Send.HEARTBEAT

    def _handle(self, kind: Event, data: Any) -> None:
        if kind is Event.MESSAGE:
            self._on_message(*data)
        elif kind is Event.ONLINE:
            self._on_online()
        elif kind is Event.OFFLINE:
            why = self._link.explanation()
            log.warning("connection lost%s; the SDK reconnects with backoff", why)
            self._tell(self._activity.offline)
        elif kind is Event.DONE:
            self._on_handler_done(*data)
        elif kind is Event.STOP:
            self._on_stop(data)
        elif kind is Event.PROGRESS:  # _pump sends it
            job = self._job
            if job is not None and job.context is not None:
                self._show_phase(job, job.context._latest_details())

    def _on_online(self) -> None:
        log.info("online")
        self._tell(self._activity.connected)
        self._failures = 0
        self._retry_at = 0.0
        if self._inflight is not None:
            # Its reply may have been lost with the connection: send again, fresh token.
            self._inflight = None
        self._claim_ahead = None
        job = self._job
        if job is None:
            self._claim_wanted = True
        elif job.phase is JobPhase.RUNNING:
            job.check_wanted = True  # notifications may have been missed while offline

    def _on_stop(self, grace: float) -> None:
        if self._mode is Mode.STOPPING:
            if time.monotonic() + grace < self._stop_deadline:
                log.info("stopping sooner: the grace period ends in %g s", grace)
                self._stop_deadline = time.monotonic() + grace
            return
        log.info("stopping: taking no new job")
        self._tell(self._activity.stopping)
        self._mode = Mode.STOPPING
        self._stop_started = time.monotonic()
        self._claim_wanted = False
        self._stop_deadline = time.monotonic() + grace
        job = self._job
        if job is not None and job.context is not None:
            job.context._request_stop(StopReason.AGENT_STOPPING)
        if job is not None and self._worker_busy and job.phase is not JobPhase.FINAL:
            log.info("job %s: waiting up to %g s for it to finish", job.job_id, grace)
        if job is not None and job.phase is JobPhase.FINAL and self._final_deadline is None:
            self._final_deadline = time.monotonic() + self._request_timeout

    def _done_stopping(self) -> bool:
        if self._mode is not Mode.STOPPING:
            return False
        job = self._job
        if job is not None and job.phase is not JobPhase.GONE:
            if job.phase is JobPhase.RUNNING:
                return False  # the handler runs; _on_timers ends it at the deadline
            return self._final_deadline is not None and time.monotonic() >= self._final_deadline
        if self._inflight is not None and self._inflight.kind is RequestKind.CLAIM:
            return False  # learn what the claim took, so the journal can record it
        return True

    def _on_timers(self, now: float) -> None:
        request = self._inflight
        if request is not None and now >= request.deadline:
            what = request.kind.value
            if request.job is not None:
                what = f"job {request.job.job_id}: {what} {request.status.value}"  # type: ignore
            log.warning("%s: no reply within %.0f s; will retry", what, self._request_timeout)
            self._inflight = None
            self._claim_ahead = None  # it rode with this request: claim again after the job
            self._back_off(now)
            if request.job is not None and request.status is Status.IN_PROGRESS:
                request.job.check_wanted = True
            if request.kind is RequestKind.CLAIM and self._mode is not Mode.STOPPING:
                self._claim_wanted = True
        job = self._job
        if self._mode is Mode.STOPPING and now >= self._stop_deadline and job is not None:
            if job.phase is JobPhase.RUNNING and self._worker_busy:
                self._hand_over_unfinished(job)
        listening = self._mode is not Mode.STOPPING
        if job is None and listening and self._online and now >= self._next_poll_at:
            self._claim_wanted = True

    def _back_off(self, now: float) -> None:
        self._failures += 1
        delay = min(self._retry_max, 0.25 * 2 ** min(self._failures, 16))
        self._retry_at = now + delay * random.uniform(0.5, 1.0)  # jitter spreads a fleet

    def _pump(self, now: float) -> None:
        """Send the next request when none is in flight and one is due."""
        if self._inflight is not None or not self._online or now < self._retry_at:
            return
        wanted = self._next_send(now)
        if wanted is None or now < wanted[0]:
            return
        what, job = wanted[1], self._job
        if what is Send.CLAIM or job is None:
            self._send_claim()
            return
        if what is Send.FINAL:
            assert job.final is not None
            sent = self._send_update(job, job.final.status, self._final_details(job))
            if sent and self._mode is not Mode.STOPPING and self._claim_ahead is None:
                self._send_claim(ahead=True)
            return
        context = job.context
        latest = context._latest_details() if context is not None else None
        if self._send_update(job, Status.IN_PROGRESS, latest) and what is Send.PROGRESS:
            assert context is not None
            context._take_unsent()
            job.next_progress_at = now + self._progress_interval
        self._show_phase(job, latest)

    def _publish(self, topic: str, payload: Dict[str, Any]) -> bool:
        if self._link.publish(topic, json.dumps(payload)):
            return True
        self._back_off(time.monotonic())  # not connected, or still resubscribing: try later
        return False

    def _new_request(self, kind: RequestKind, **kwargs: Any) -> Request:
        return Request(kind, uuid.uuid4().hex, time.monotonic() + self._request_timeout, **kwargs)

    def _send_claim(self, ahead: bool = False) -> None:
        """Send start-next; ``ahead``: right behind the final update in flight (the
        ``_claim_ahead``, see the module docstring)."""
        request = self._new_request(RequestKind.CLAIM)
        payload = {
            "clientToken": request.token,
            "stepTimeoutInMinutes": self._step_timeout_minutes,
            "statusDetails": {RUN_ID_KEY: self._run_id},
        }
        if self._publish(self._prefix + "start-next", payload):
            log.debug("start-next sent%s (token %s)", " ahead" if ahead else "", request.token)
            if ahead:
                self._claim_ahead = request
            else:
                self._inflight = request
            self._claim_wanted = False
            self._next_poll_at = time.monotonic() + self._poll_interval
            if not self.ready.is_set():
                self.ready.set()
                if self._on_ready is not None:
                    self._on_ready()

    def _send_update(
        self, job: Execution, status: Status, details: Optional[Mapping[str, str]]
    ) -> bool:
        request = self._new_request(RequestKind.UPDATE, job=job, status=status)
        payload: Dict[str, Any] = {
            "status": status.value,
            "expectedVersion": job.version,
            "executionNumber": job.execution_number,
            "clientToken": request.token,
        }
        if details is not None:
            payload["statusDetails"] = fit_status_details(details)
        if status is Status.IN_PROGRESS:
            payload["stepTimeoutInMinutes"] = self._step_timeout_minutes
            # The version the next update expects; a final status needs none (a refusal
            # carries the execution's state whatever this says).
            payload["includeJobExecutionState"] = True
        if self._publish(f"{self._prefix}{job.job_id}/update", payload):
            log.debug(
                "job %s: update %s sent (version %d, token %s)",
                job.job_id,
                status.value,
                job.version,
                request.token,
            )
            self._inflight = request
            if status is Status.IN_PROGRESS:
                job.check_wanted = False
            return True
        return False

    def _final_details(self, job: Execution) -> Optional[Mapping[str, str]]:
        """The final statusDetails, cut down step by step if the service refused them."""
        assert job.final is not None
        if job.final_fallback == 0:
            return job.final.details
        if job.final_fallback == 1 and "reason" in job.final.details:
            return {"reason": job.final.details["reason"]}
        return None

    # what to do with a claimed execution (the replies are read in agent/jobs_replies.py)

    def _forget_vanished(self, record: JobRecord) -> None:
        log.warning(
            "job %s: no longer pending at the service (canceled, timed out or deleted while "
            "the agent was away); forgetting it",
            record.job_id,
        )
        self._ledger.record(None)

    def _dispatch_verdict(
        self, job: Execution, resumed: bool = False
    ) -> Union[Registration, Outcome]:
        """The registration that runs ``job``'s document, or the final status refusing it;
        the document gate runs first (told when the job is ``resumed``, see DocumentGate) and
        may replace the document."""
        problem = document_problem(job.document, job.document_cut)
        if problem:
            log.warning("job %s: %s; rejecting", job.job_id, problem)
            return Outcome.rejected(problem, "INVALID_DOCUMENT")
        if self._document_gate is not None:
            try:
                options = {"resumed": True} if resumed else {}
                job.document = self._document_gate(job.job_id, job.document, **options)
            except JobError as error:
                outcome = outcome_of_error(error)
                log.warning("job %s: %s; %s", job.job_id, error.reason, outcome.status.value)
                return outcome
        registration = self._handlers.select(job.document)
        if registration is None:
            reason = self._handlers.explain_no_match(job.document)
            log.warning("job %s: %s; rejecting", job.job_id, reason)
            return Outcome.rejected(reason, "NO_HANDLER")
        return registration

    def _carry_out(self, job: Execution, decision: Decision) -> None:
        """Do what ``decide`` chose for the claimed ``job``."""
        job.attempt = decision.attempt
        action = decision.action
        if decision.note and action is not Action.RUN:
            log.log(decision.level, "job %s: %s", job.job_id, decision.note)
        if action is Action.DELIVER:
            assert decision.record is not None
            self._resume_final(job, decision.record)
        elif action is Action.REPORT:
            assert decision.outcome is not None
            self._decide_final(job, decision.outcome)
        elif action is Action.LEAVE:
            log.info("job %s: claimed while stopping; left for the next start", job.job_id)
            current = self._ledger.current
            if current is None or current.key != job.key:
                # Keep a record the journal has (RUNNING stays RUNNING: the next start must
                # still see the job as interrupted); else note the claim.
                self._ledger.record(
                    JobRecord(job.job_id, job.execution_number, job.version, Phase.CLAIMED)
                )
            self._job = None
        else:
            assert decision.registration is not None
            self._start_handler(job, decision)

    def _start_handler(self, job: Execution, decision: Decision) -> None:
        """Record the job RUNNING, then hand it to the worker thread."""
        attempt = decision.attempt
        record = JobRecord(job.job_id, job.execution_number, job.version, Phase.RUNNING, attempt)
        try:
            self._ledger.record(record, strict=True)
        except OSError as error:
            # Never run a job we could not record: after a crash we could not tell it ran.
            reason = f"cannot record the job in the journal: {error}"
            self._decide_final(job, Outcome.failed(reason, "JOURNAL_ERROR"))
            return
        if decision.interrupted:
            log.warning(
                "job %s: %s%s; resuming (attempt %d)",
                job.job_id,
                f"{decision.note}; " if decision.note else "",
                INTERRUPTED_REASON,
                attempt,
            )
            job.check_wanted = True  # refresh the step timer at once
        elif decision.note:
            log.log(decision.level, "job %s: %s", job.job_id, decision.note)
        job.registration = decision.registration
        job.context = JobContext(job.job_id, job.execution_number, attempt, self._wake)
        self._worker_busy = True
        self._worker_job_id = job.job_id
        self._work.put(job)
        self._tell(self._activity.job_started, job.job_id, attempt)

    def _show_phase(self, job: Execution, details: Optional[Mapping[str, str]]) -> None:
        """Tell the activity the running job's ``phase`` (a progress key) when it changed."""
        phase = details.get("phase") if details else None
        if phase and phase != job.phase_shown:
            job.phase_shown = phase
            self._tell(self._activity.job_phase, job.job_id, phase)

    def _tell(self, call: Callable[..., None], *args: Any) -> None:
        """Tell the activity ``call(*args)`` at the end of this loop turn: its work (the
        state's comparison, the STATUS= datagram; the status file is written by the
        reporter's own thread) then overlaps the service's reply to what the turn sent
        instead of delaying the send. Order is kept."""
        self._untold.append((call, args))

    def _tell_activity(self) -> None:
        untold, self._untold = self._untold, []
        for call, args in untold:
            call(*args)

    def _wake(self) -> None:
        self._events.put((Event.PROGRESS, None))

    def _set_final(self, job: Execution, outcome: Outcome) -> None:
        job.phase = JobPhase.FINAL
        job.final = outcome
        job.final_fallback = 0
        if self._mode is Mode.STOPPING and self._final_deadline is None:
            # Give the service one request timeout to accept it; the journal keeps it if not.
            self._final_deadline = time.monotonic() + self._request_timeout

    def _decide_final(self, job: Execution, outcome: Outcome) -> None:
        self._set_final(job, outcome)
        self._ledger.record_final(
            job.job_id, job.execution_number, job.version, job.attempt, outcome
        )
        reason = outcome.details.get("reason")
        self._tell(self._activity.job_finished, job.job_id, outcome.status.value, reason)

    def _resume_final(self, job: Execution, record: JobRecord) -> None:
        job.attempt = record.attempt
        self._set_final(job, final_outcome(record))
        log.info("job %s: delivering final status %s", job.job_id, record.status)

    def _restore_pending_final(self) -> None:
        record = self._ledger.current
        if record is not None and record.phase is Phase.FINAL:
            job = Execution(record.job_id, record.execution_number, record.version_number)
            self._resume_final(job, record)
            self._job = job

    def _on_handler_done(self, job: Execution, outcome: Outcome) -> None:
        self._worker_busy = False
        if job is not self._job:
            log.warning("job %s: handler finished after the job was dropped", job.job_id)
            return
        if job.phase is JobPhase.GONE:
            log.warning(
                "job %s: handler finished (%s) after the service ended the job (%s); not reported",
                job.job_id,
                outcome.status.value,
                job.gone,
            )
            self._finish(job)
            return
        if job.phase is JobPhase.FINAL:
            log.warning(
                "job %s: handler finished (%s) after %s was decided; keeping that",
                job.job_id,
                outcome.status.value,
                job.final.status.value,
            )
            return
        if outcome.status is Status.IN_PROGRESS:
            self._hand_over(job, outcome)
            return
        self._decide_final(job, outcome)
        # after the journal write: from this line on, a restart delivers this outcome
        log.info("job %s: finished: %s", job.job_id, outcome.status.value)

    def _hand_over(self, job: Execution, outcome: Outcome) -> None:
        """The handler asked to go on at the next start: record that, report nothing."""
        if self._mode is not Mode.STOPPING:
            reason = "the handler handed the job over to a restart, but the agent is not stopping"
            log.error("job %s: %s", job.job_id, reason)
            self._decide_final(job, Outcome.failed(reason, "HANDOVER_REFUSED"))
            return
        record = JobRecord(
            job.job_id, job.execution_number, job.version, Phase.HANDED_OVER, job.attempt
        )
        self._ledger.record(record)
        reason = outcome.details.get("reason", "")
        log.info("job %s: left IN_PROGRESS for the next start (%s)", job.job_id, reason)
        self._tell(self._activity.job_handed_over, job.job_id, reason)
        self._job = None

    def _hand_over_unfinished(self, job: Execution) -> None:
        """The grace period ended with the handler still running: leave the job to the next
        start, never report it FAILED for the stop (what it started may still finish, as dpkg
        does). The journal keeps it RUNNING, so the next start sees it interrupted and runs
        it again when its handler is safe to re-run, else reports it FAILED interrupted."""
        waited = time.monotonic() - self._stop_started
        reason = f"still running {waited:.0f} s after the stop; handed over to the next start"
        log.warning("job %s: %s", job.job_id, reason)
        self._tell(self._activity.job_handed_over, job.job_id, reason)
        self._job = None

    def _finish(self, job: Execution) -> None:
        """Forget the job in hand and remember it as finished; look for the next one.

        The journal learns this with its next write: the RUNNING record of the job the next
        claim hands out, or, when none comes, at the end of the loop's turn that ends the
        claim (``_save_unsaved``). A crash before that leaves the journal with the final
        status the service already took: the next start sends it again, learns it is
        recorded, and finds a job claimed meanwhile never started, as the journal records
        RUNNING before any start.
        """
        self._ledger.finish(job.job_id, job.execution_number)
        self._job = None
        if self._claim_ahead is not None and self._inflight is None:
            # The start-next sent behind the final update now counts: await its reply.
            self._inflight, self._claim_ahead = self._claim_ahead, None
        elif self._mode is not Mode.STOPPING:
            self._claim_wanted = True

    def _job_gone(self, job: Execution, why: str) -> None:
        """The service no longer takes updates for ``job``."""
        if job.context is not None:
            job.context._request_stop(StopReason.SERVICE_ENDED, why)
        if job.phase is JobPhase.FINAL:
            log.warning(
                "job %s: final status %s not recorded: %s", job.job_id, job.final.status.value, why
            )
            self._finish(job)
        elif self._worker_busy:
            log.warning("job %s: %s; no longer reporting for it", job.job_id, why)
            job.phase = JobPhase.GONE
            job.gone = why
        else:
            self._finish(job)

    def _save_unsaved(self, force: bool = False) -> None:
        """Write the state ``_finish`` kept in memory, unless a later save wrote it already or
        (unless ``force``) a claim is on its way: its job's RUNNING record will carry it."""
        request = self._inflight
        if not force and request is not None and request.kind is RequestKind.CLAIM:
            return
        self._ledger.flush()
