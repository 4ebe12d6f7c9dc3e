"""Rollout rates and abort criteria of jobs: the rules, as pure functions, and their clock.

The service (``service.py``) keeps what a rollout has not queued yet in the store and asks
these functions how many executions to queue now and whether a job is to be aborted; the
``RolloutClock`` thread calls ``LocalJobsService.release_rollouts`` so that executions are
queued as service minutes pass (``--minute-seconds`` scales them like the timeouts).

Readings of AWS's documentation (DG:job-rollout-abort, botocore ``AbortCriteria``) where it
leaves room, also listed in docs/local-jobs-fleet.md:

- a rollout "minute" is a window that opens when the job is created (and then every minute);
  up to the current rate of executions are queued in each window;
- an exponential rate starts at ``baseRatePerMinute`` and is multiplied by
  ``incrementFactor`` (rounded down, at least one more) each time ``numberOfNotifiedThings``
  more things were queued, or ``numberOfSucceededThings`` more succeeded, since the last
  increase, never above ``maximumPerMinute``; a new rate applies from the next minute;
- an abort criterion counts the things whose execution ended (SUCCEEDED, FAILED, REJECTED,
  TIMED_OUT; not CANCELED or REMOVED) as executed: once at least
  ``minNumberOfExecutedThings`` did, and the failures of ``failureType`` (ALL: FAILED,
  REJECTED and TIMED_OUT) are at least ``thresholdPercentage`` of them, the job is canceled
  with reasonCode ``ABORT_<failureType>_THRESHOLD`` (AWS documents no reason code).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Mapping, Optional, Sequence, Tuple

from local_jobs.model import AbortCriterion, ExecutionStatus, RolloutConfig

log = logging.getLogger(__name__)

MAX_PER_MINUTE = 1000
# (rate, window_start, released_in_window, notified_mark, succeeded_mark)
RolloutState = Tuple[int, float, int, int, int]

_FAILURES = {
    "FAILED": (ExecutionStatus.FAILED,),
    "REJECTED": (ExecutionStatus.REJECTED,),
    "TIMED_OUT": (ExecutionStatus.TIMED_OUT,),
    "ALL": (ExecutionStatus.FAILED, ExecutionStatus.REJECTED, ExecutionStatus.TIMED_OUT),
}
_EXECUTED = (
    ExecutionStatus.SUCCEEDED,
    ExecutionStatus.FAILED,
    ExecutionStatus.REJECTED,
    ExecutionStatus.TIMED_OUT,
)


def starting_state(config: RolloutConfig, now: float) -> RolloutState:
    """The state of a rollout that starts now."""
    rate = config.base_rate_per_minute or config.maximum_per_minute
    return (min(rate, config.maximum_per_minute), now, 0, 0, 0)


def quota(state: RolloutState, now: float, minute: float) -> Tuple[int, RolloutState]:
    """How many executions may be queued now, and the state with a new window if one began."""
    rate, window_start, released, notified_mark, succeeded_mark = state
    if now >= window_start + minute:
        elapsed_windows = int((now - window_start) // minute)
        window_start += elapsed_windows * minute
        released = 0
    state = (rate, window_start, released, notified_mark, succeeded_mark)
    return max(0, rate - released), state


def after_release(
    config: RolloutConfig, state: RolloutState, released: int, notified: int, succeeded: int
) -> RolloutState:
    """The state after ``released`` more were queued; ``notified``/``succeeded`` are totals."""
    rate, window_start, in_window, notified_mark, succeeded_mark = state
    in_window += released
    if config.base_rate_per_minute is not None and config.increment_factor is not None:
        increase = (
            config.notified_things is not None
            and notified - notified_mark >= config.notified_things
        ) or (
            config.succeeded_things is not None
            and succeeded - succeeded_mark >= config.succeeded_things
        )
        if increase and rate < config.maximum_per_minute:
            increased = max(rate + 1, int(rate * config.increment_factor))
            rate = min(config.maximum_per_minute, increased)
            notified_mark, succeeded_mark = notified, succeeded
            # The new rate applies from the next minute: this one counts as used up.
            in_window = max(in_window, rate)
    return (rate, window_start, in_window, notified_mark, succeeded_mark)


def next_window(state: RolloutState, minute: float) -> float:
    """When the current window ends (service clock)."""
    return state[1] + minute


def abort_criterion(
    criteria: Sequence[AbortCriterion], counts: Mapping[ExecutionStatus, int]
) -> Optional[AbortCriterion]:
    """The first criterion the counts of the job's latest executions meet, or None."""
    executed = sum(counts.get(status, 0) for status in _EXECUTED)
    for criterion in criteria:
        if executed < criterion.min_executed_things or executed == 0:
            continue
        failures = sum(counts.get(status, 0) for status in _FAILURES[criterion.failure_type])
        if failures * 100.0 / executed >= criterion.threshold_percentage:
            return criterion
    return None


def abort_reason_code(criterion: AbortCriterion) -> str:
    return f"ABORT_{criterion.failure_type}_THRESHOLD"


class RolloutClock:
    """A thread that calls ``release`` (which returns seconds until its next window, or None
    when nothing is rolling out) and sleeps until then or until ``wake()``."""

    def __init__(self, release: Callable[[], Optional[float]]) -> None:
        self._release = release
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobs-rollouts", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wakeup.clear()
            try:
                wait = self._release()
            except Exception:
                log.exception("rollout step failed; retrying in a second")
                wait = 1.0
            self._wakeup.wait(3600.0 if wait is None else max(0.01, wait))
