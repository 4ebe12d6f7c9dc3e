"""Faults between agent and broker: the broker killed, connections cut, traffic silently dropped
(both ways, or only the replies) and delayed, before, during and after a job and while its final
status is on the wire. Every test ends with each execution in a truthful terminal state at the
service, each handler run exactly once, and the agent still taking the next job.

The agent is the real JobClient with the real SDK client, pointed at a FaultProxy in front of
the real broker (local_jobs/fault_proxy.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import pytest
from agent_core_fixtures import InProcessAgent, Recorder, create_job, wait_for, wait_status
from resilience_fixtures import through_proxy, wait_all_terminal

pytest_plugins = ("resilience_fixtures",)
pytestmark = pytest.mark.timeout(60)

OUTAGE_SECONDS = 0.6  # long enough for the agent to try (and fail) to talk


@dataclass(frozen=True)
class Fault:
    name: str
    apply: Callable[[object, object], None]
    heal: Callable[[object, object], None]


FAULTS = [
    Fault("broker-killed", lambda stack, proxy: stack.kill_broker(),
          lambda stack, proxy: stack.start_broker()),
    Fault("connections-cut", lambda stack, proxy: proxy.refuse(),
          lambda stack, proxy: proxy.restore()),
    Fault("traffic-silently-dropped", lambda stack, proxy: proxy.blackhole("both"),
          lambda stack, proxy: proxy.restore()),
    Fault("replies-silently-dropped", lambda stack, proxy: proxy.blackhole("down"),
          lambda stack, proxy: proxy.restore()),
]  # fmt: skip
PHASES = ["before-the-job", "while-it-runs", "on-the-final-status", "after-the-job"]


class FaultyJob:
    """A handler that records its runs, can block until released, and can start the fault
    itself just before it returns (so the final status meets the fault)."""

    def __init__(self, fault_now: Callable[[], None]) -> None:
        self.recorder = Recorder()
        self.release = threading.Event()
        self.returned = threading.Event()
        self._fault_now = fault_now

    def __call__(self, document, job):
        self.recorder.record(document, job)
        if document.get("block"):
            while not self.release.wait(0.05):
                job.report_progress({"waiting": "yes"})
        if document.get("fault_at_end"):
            self._fault_now()
        self.returned.set()
        return {"ran": job.job_id}


# Every fault meets a running job and a final status; before and after a job, where the agent
# is idle, the two ways of losing the connection (killed broker, silent drop) stand for all.
IDLE_FAULTS = ("broker-killed", "traffic-silently-dropped")
CASES = [
    (fault, phase)
    for phase in PHASES
    for fault in FAULTS
    if fault.name in IDLE_FAULTS or phase in ("while-it-runs", "on-the-final-status")
]


@pytest.mark.parametrize("fault, phase", CASES, ids=[f"{f.name}-{p}" for f, p in CASES])
def test_network_fault_ends_every_job_truthfully(stack, proxy, agents, fault, phase):
    through_proxy(stack, proxy)
    handler = FaultyJob(lambda: fault.apply(stack, proxy))
    agent = InProcessAgent(stack).add("JOB", handler)
    agents.append(agent)
    agent.start()

    if phase == "before-the-job":
        fault.apply(stack, proxy)
        create_job(stack, "job-a", {"jobType": "JOB"})
        time.sleep(OUTAGE_SECONDS)
        fault.heal(stack, proxy)
    elif phase == "while-it-runs":
        create_job(stack, "job-a", {"jobType": "JOB", "block": True})
        wait_status(stack, "job-a", ["IN_PROGRESS"])
        fault.apply(stack, proxy)
        handler.release.set()  # the job ends during the outage
        time.sleep(OUTAGE_SECONDS)
        fault.heal(stack, proxy)
    elif phase == "on-the-final-status":
        create_job(stack, "job-a", {"jobType": "JOB", "fault_at_end": True})
        assert handler.returned.wait(15), "the handler did not run"
        time.sleep(OUTAGE_SECONDS)
        fault.heal(stack, proxy)
    else:
        create_job(stack, "job-a", {"jobType": "JOB"})
        wait_status(stack, "job-a", ["SUCCEEDED"])
        fault.apply(stack, proxy)
        time.sleep(OUTAGE_SECONDS)
        fault.heal(stack, proxy)

    create_job(stack, "job-b", {"jobType": "JOB"})  # the agent still takes new work
    wait_all_terminal(stack, {"job-a": "SUCCEEDED", "job-b": "SUCCEEDED"}, timeout=30)
    assert handler.recorder.runs("job-a") == 1
    assert handler.recorder.runs("job-b") == 1


def test_replies_slower_than_the_request_timeout_are_ignored_then_recovered(stack, proxy, agents):
    # Each way 1.2 s: every reply arrives after the 2 s request timeout, for a token the agent
    # no longer waits for, with a version that is stale by then.
    through_proxy(stack, proxy)
    handler = FaultyJob(lambda: None)
    agent = InProcessAgent(stack, heartbeat_seconds=0.3).add("JOB", handler)
    agents.append(agent)
    agent.start()
    create_job(stack, "slow-a", {"jobType": "JOB", "block": True})
    wait_status(stack, "slow-a", ["IN_PROGRESS"])
    proxy.delay(1.2)
    time.sleep(2.5)
    handler.release.set()
    time.sleep(1.5)
    proxy.restore()
    create_job(stack, "slow-b", {"jobType": "JOB"})
    wait_all_terminal(stack, {"slow-a": "SUCCEEDED", "slow-b": "SUCCEEDED"}, timeout=30)
    assert handler.recorder.runs("slow-a") == 1
    assert handler.recorder.runs("slow-b") == 1


def test_repeated_cuts_during_a_job_lose_nothing(stack, proxy, agents):
    through_proxy(stack, proxy)
    handler = FaultyJob(lambda: None)
    agent = InProcessAgent(stack).add("JOB", handler)
    agents.append(agent)
    agent.start()
    create_job(stack, "cuts-a", {"jobType": "JOB", "block": True})
    create_job(stack, "cuts-b", {"jobType": "JOB"})
    wait_status(stack, "cuts-a", ["IN_PROGRESS"])
    for _ in range(2):
        wait_for(lambda: proxy.open_connections > 0, 20, "the agent to reconnect")
        proxy.cut()
        time.sleep(0.2)
    handler.release.set()
    wait_all_terminal(stack, {"cuts-a": "SUCCEEDED", "cuts-b": "SUCCEEDED"}, timeout=40)
    assert handler.recorder.runs("cuts-a") == 1
    assert handler.recorder.runs("cuts-b") == 1
