"""The real agent under a NOTIFY_SOCKET this test owns, against the real local stack.

As systemd would run it (Type=notify, WatchdogSec=): READY=1 once connected and subscribed,
WATCHDOG=1 while healthy, none once the broker has been gone longer than
``[agent] watchdog_offline_seconds``, and STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest
from stack_helpers import set_settings
from systemd_fixtures import NotifySocket

from local_jobs.agent_process import AgentProcess, jobs_agent_command

pytestmark = pytest.mark.timeout(120)

WATCHDOG_SECONDS = 1.0  # the agent pings every half of it
OFFLINE_LIMIT_SECONDS = 2.0


def agent_settings(stack) -> Path:
    path = stack.thing("thing-1").settings_path
    set_settings(path, "agent", watchdog_offline_seconds=OFFLINE_LIMIT_SECONDS)
    return path


@pytest.fixture
def notify_socket():
    sock = NotifySocket()
    yield sock
    sock.close()


@pytest.fixture
def run_agent(tmp_path, notify_socket):
    """Start ``jobs_agent.py -c SETTINGS`` as systemd would; stopped at the end of the test."""
    started = []

    def start(settings: Path, python: str = sys.executable, script: str = "") -> AgentProcess:
        agent = AgentProcess(
            jobs_agent_command(settings, script or None, python),
            tmp_path / f"agent-{len(started)}.log",
            env={
                "NOTIFY_SOCKET": notify_socket.path,
                "WATCHDOG_USEC": str(int(WATCHDOG_SECONDS * 1_000_000)),
            },
            env_remove=("WATCHDOG_PID",),
        )
        started.append(agent)
        return agent.start()

    yield start
    for agent in started:
        agent.kill()


def watchdog_pings(messages) -> int:
    return sum("WATCHDOG=1" in message.splitlines() for message in messages)


def test_agent_sends_ready_once_connected_then_watchdog_pings(stack, notify_socket, run_agent):
    run_agent(agent_settings(stack))
    before_ready = notify_socket.wait_for("READY=1", timeout=30)
    assert watchdog_pings(before_ready) == 0
    after_ready = notify_socket.wait_for("WATCHDOG=1", timeout=5)
    after_ready += notify_socket.wait_for("WATCHDOG=1", timeout=5)
    assert watchdog_pings(after_ready) >= 2


def test_watchdog_pings_stop_once_broker_is_gone_too_long_and_resume_after(
    stack, notify_socket, run_agent
):
    run_agent(agent_settings(stack))
    notify_socket.wait_for("READY=1", timeout=30)
    notify_socket.wait_for("WATCHDOG=1", timeout=5)
    stack.kill_broker()
    # Pings may go on while the agent has been offline for less than the limit.
    settle = time.monotonic() + OFFLINE_LIMIT_SECONDS + WATCHDOG_SECONDS
    while time.monotonic() < settle:
        notify_socket.receive(settle - time.monotonic())
    # From here on the agent is past the limit: a quiet period of several ping intervals.
    quiet = []
    quiet_until = time.monotonic() + 4 * WATCHDOG_SECONDS
    while time.monotonic() < quiet_until:
        message = notify_socket.receive(quiet_until - time.monotonic())
        if message is not None:
            quiet.append(message)
    assert watchdog_pings(quiet) == 0, quiet
    stack.start_broker()
    notify_socket.wait_for("WATCHDOG=1", timeout=45)


def test_sigterm_sends_stopping_and_the_agent_exits_0(stack, notify_socket, run_agent):
    agent = run_agent(agent_settings(stack))
    notify_socket.wait_for("READY=1", timeout=30)
    agent.signal(signal.SIGTERM)
    notify_socket.wait_for("STOPPING=1", timeout=10)
    assert agent.wait(30) == 0
