"""The agent process SIGKILLed at each phase of a job, then restarted: every job ends in a
truthful terminal state, handlers run again only when they are safe to re-run (and a bounded
number of times), and a final status sent before the kill is neither lost nor doubled.

The agent is jobs_agent.run_agent as a process (tests/agent_core_child.py: SLEEP is safe to
re-run, SLEEP_ONCE is not); its runs file counts handler starts across restarts. A FaultProxy
between agent and broker holds replies back so the kill lands in the wanted phase, which the
test checks in the journal before killing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pytest
from agent_core_fixtures import create_job, execution, wait_for, wait_status
from resilience_fixtures import through_proxy, wait_all_terminal
from stack_helpers import set_settings

from agent.journal import Journal

pytest_plugins = ("resilience_fixtures",)
pytestmark = pytest.mark.timeout(90)

CONNECTED = "listening for jobs"
HOLD_SECONDS = 2.0  # how long the proxy holds a message back: the window the kill lands in


@pytest.fixture
def settings_path(stack, proxy) -> Path:
    path = through_proxy(stack, proxy)
    set_settings(
        path, "agent", heartbeat_seconds=1, progress_interval_seconds=0.2, shutdown_grace_seconds=1
    )
    return path


def journal_phase(settings_path: Path) -> Optional[str]:
    """The phase of the job in hand in the agent's journal (None: no job in hand)."""
    state = Journal(settings_path.parent / "state").peek()
    return state.current.phase.value if state.current is not None else None


def start_agent(processes, settings_path, name="agent"):
    agent = processes(settings_path, name)
    agent.wait_log(CONNECTED)
    return agent


def runs_of(agent, job_id: str):
    return [line for line in agent.runs() if line.split()[0] == job_id]


def test_kill_after_the_claim_before_the_handler_starts_runs_it_once(
    stack, proxy, processes, settings_path
):
    first = start_agent(processes, settings_path)
    proxy.delay(HOLD_SECONDS, "down")  # the start-next reply is held in the proxy
    create_job(stack, "claimed-1", {"jobType": "SLEEP_ONCE", "seconds": 0.2})
    wait_status(stack, "claimed-1", ["IN_PROGRESS"], timeout=HOLD_SECONDS * 3)
    proxy.blackhole("down")  # and now dropped: the agent never learns it claimed the job
    first.kill()
    assert journal_phase(settings_path) is None
    assert first.runs() == []
    proxy.restore()
    second = start_agent(processes, settings_path, "restarted")
    done = wait_status(stack, "claimed-1", timeout=20)
    assert done["status"] == "SUCCEEDED"
    assert runs_of(second, "claimed-1") == ["claimed-1 1"]


@pytest.mark.parametrize(
    "job_type, status, runs",
    [
        ("SLEEP", "SUCCEEDED", ["running-1 1", "running-1 2"]),  # safe to re-run: resumed
        ("SLEEP_ONCE", "FAILED", ["running-1 1"]),  # not safe: reported, not re-run
    ],
)
def test_kill_while_the_handler_runs_resumes_only_rerunnable_handlers(
    stack, processes, settings_path, job_type, status, runs
):
    first = start_agent(processes, settings_path)
    create_job(stack, "running-1", {"jobType": job_type, "seconds": 1.5})
    wait_for(lambda: first.runs(), 15, "the handler to start")
    assert journal_phase(settings_path) == "RUNNING"
    first.kill()
    second = start_agent(processes, settings_path, "restarted")
    done = wait_status(stack, "running-1", timeout=20)
    assert done["status"] == status
    if status == "FAILED":
        assert done["details"]["reason"] == "interrupted by agent restart"
        assert done["details"]["errorCode"] == "INTERRUPTED"
    else:
        assert done["details"]["attempt"] == "2"
    assert second.runs() == runs


def test_kill_after_the_final_status_is_decided_but_not_sent_delivers_it_after_restart(
    stack, proxy, processes, settings_path
):
    first = start_agent(processes, settings_path)
    create_job(stack, "final-1", {"jobType": "SLEEP", "seconds": 0.5})
    wait_status(stack, "final-1", ["IN_PROGRESS"])
    proxy.delay(HOLD_SECONDS, "up")  # what the agent sends now is held in the proxy...
    wait_for(lambda: journal_phase(settings_path) == "FINAL", 15, "the final status")
    proxy.blackhole("up")  # ...and dropped: the final status never reaches the service
    first.kill()
    assert execution(stack, "final-1")["status"] == "IN_PROGRESS"
    proxy.restore()
    second = start_agent(processes, settings_path, "restarted")
    done = wait_status(stack, "final-1", timeout=20)
    assert done["status"] == "SUCCEEDED"
    assert done["details"]["attempt"] == "1"
    assert runs_of(second, "final-1") == ["final-1 1"]


def test_kill_after_the_final_status_is_sent_but_not_acknowledged_runs_nothing_again(
    stack, proxy, processes, settings_path
):
    first = start_agent(processes, settings_path)
    create_job(stack, "acked-1", {"jobType": "SLEEP_ONCE", "seconds": 0.5})
    wait_status(stack, "acked-1", ["IN_PROGRESS"])
    proxy.delay(HOLD_SECONDS, "down")  # the service's acknowledgement is held...
    wait_status(stack, "acked-1", ["SUCCEEDED"], timeout=10)
    proxy.blackhole("down")  # ...and dropped
    assert journal_phase(settings_path) == "FINAL"
    first.kill()
    proxy.restore()
    second = start_agent(processes, settings_path, "restarted")
    create_job(stack, "acked-2", {"jobType": "SLEEP_ONCE", "seconds": 0})
    wait_all_terminal(stack, {"acked-1": "SUCCEEDED", "acked-2": "SUCCEEDED"})
    assert second.runs() == ["acked-1 1", "acked-2 1"]
    wait_for(lambda: journal_phase(settings_path) is None, 10, "the journal to settle")
    assert "not running it twice" not in second.log_text()


def test_a_job_killed_at_every_attempt_is_failed_after_the_bounded_retries(
    stack, processes, settings_path
):
    for attempt in (1, 2, 3):
        agent = start_agent(processes, settings_path, f"attempt-{attempt}")
        if attempt == 1:
            create_job(stack, "doomed-1", {"jobType": "SLEEP", "seconds": 30})
        wait_for(lambda a=agent, n=attempt: len(a.runs()) == n, 15, f"attempt {attempt}")
        agent.kill()
    last = start_agent(processes, settings_path, "last")
    done = wait_status(stack, "doomed-1", timeout=20)
    assert done["status"] == "FAILED"
    assert done["details"]["errorCode"] == "INTERRUPTED"
    assert done["details"]["reason"] == "interrupted by agent restart 3 times; giving up"
    assert last.runs() == ["doomed-1 1", "doomed-1 2", "doomed-1 3"]


def test_a_killed_agent_that_never_returns_leaves_no_job_in_progress_forever(
    stack, processes, settings_path
):
    # The stack's minute lasts 1 s: a step timeout of one minute fires after 1 s of silence.
    set_settings(settings_path, "agent", step_timeout_minutes=1, heartbeat_seconds=0.3)
    agent = start_agent(processes, settings_path)
    create_job(stack, "orphan-1", {"jobType": "SLEEP", "seconds": 30})
    wait_for(lambda: agent.runs(), 15, "the handler to start")
    agent.kill()
    done = wait_status(stack, "orphan-1", ["TIMED_OUT"], timeout=15)
    assert json.dumps(done["details"])  # whatever progress it had reported is kept
