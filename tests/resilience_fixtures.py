"""Helpers for the resilience suite (tests/test_faults_*.py, test_hostile_*.py): a fault proxy
between agent and broker, settings rewrites, and checks that every job ended truthfully.

The agent-core helpers (in-process JobClient, agent process, waiting) are reused from
agent_core_fixtures; this module only adds what the faults need.
"""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping

import pytest
from agent_core_fixtures import TERMINAL, AgentProcess, InProcessAgent, wait_for

from local_jobs.fault_proxy import FaultProxy
from local_jobs.stack import LocalStack


def set_option(settings_path: Path, section: str, key: str, value: Any) -> None:
    """Rewrite one key of a settings file (other keys and sections kept)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(settings_path)
    if not parser.has_section(section):
        parser.add_section(section)
    parser.set(section, key, str(value))
    with open(settings_path, "w") as stream:
        parser.write(stream)


def through_proxy(stack: LocalStack, proxy: FaultProxy, thing: str = "thing-1") -> Path:
    """Point the thing's settings file at the proxy instead of the broker; return its path."""
    path = stack.thing(thing).settings_path
    set_option(path, "connection", "port", proxy.port)
    return path


def executions(stack: LocalStack, thing: str = "thing-1") -> Dict[str, str]:
    """Every execution of ``thing`` at the service: job id -> status."""
    client = stack.iot_client()
    found: Dict[str, str] = {}
    kwargs: Dict[str, Any] = {"thingName": thing}
    while True:
        page = client.list_job_executions_for_thing(**kwargs)
        for summary in page.get("executionSummaries", []):
            found[summary["jobId"]] = summary["jobExecutionSummary"]["status"]
        token = page.get("nextToken")
        if not token:
            return found
        kwargs["nextToken"] = token


def wait_all_terminal(
    stack: LocalStack, expected: Mapping[str, str], thing: str = "thing-1", timeout: float = 20.0
) -> Dict[str, str]:
    """Wait until every execution of ``thing`` is terminal; assert they are exactly
    ``expected`` (job id -> status): none lost, none left IN_PROGRESS, none invented."""
    last: Dict[str, str] = {}

    def settled() -> bool:
        nonlocal last
        last = executions(stack, thing)
        return all(status in TERMINAL for status in last.values()) and set(last) >= set(expected)

    try:
        wait_for(settled, timeout, f"every execution of {thing} terminal")
    except AssertionError:
        raise AssertionError(f"not all terminal after {timeout} s: {last}") from None
    assert last == dict(expected)
    return last


@pytest.fixture
def proxy(stack) -> Iterator[FaultProxy]:
    """A fault proxy in front of the stack's broker (the agent must be pointed at it)."""
    with FaultProxy(stack.mqtt_port) as made:
        yield made


@pytest.fixture
def agents(stack) -> Iterator[List[InProcessAgent]]:
    """In-process agents a test makes (append to the list); stopped at the end."""
    made: List[InProcessAgent] = []
    yield made
    for agent in made:
        agent.stop(grace_seconds=0)


@pytest.fixture
def processes(tmp_path) -> Iterator[Any]:
    """``start(settings_path, name)`` runs tests/agent_core_child.py as a process (test
    handlers SLEEP, SLEEP_ONCE, STUBBORN); every one started is killed at the end. All runs
    of one test share ``tmp_path / 'runs'``, so handler starts are counted across restarts."""
    made: List[AgentProcess] = []

    def start(settings_path: Path, name: str = "agent") -> AgentProcess:
        agent = AgentProcess(settings_path, tmp_path / f"{name}-{len(made)}.log", tmp_path / "runs")
        made.append(agent)
        return agent

    yield start
    for agent in made:
        agent.close()
