"""Small versions of the load runs (the heavy ones are ``bench/run.py --heavy``).

Correctness only, never timing: every job execution ends SUCCEEDED at the service and its
handler ran exactly once; an idle agent given periodic jobs keeps its file descriptors,
threads and memory flat. Real broker, real service, real agent code (bench/load.py).
"""

from __future__ import annotations

import pytest

from bench.agent_process import AgentProcess, noop_agent_command
from bench.context import privileged_connection
from bench.load import run_load, soak
from bench.observer import JobsObserver

pytestmark = pytest.mark.timeout(180)


def test_one_agent_drains_50_queued_jobs_each_exactly_once(stack):
    result = run_load(stack, ["thing-1"], 50, prefix="drain", queued_before_start=True,
                      timeout=150)

    assert len(result.expected) == 50
    assert result.problems == []


def test_ten_agents_with_a_stream_of_jobs_run_every_execution_exactly_once(stack):
    things = ["thing-1"] + [stack.add_thing(f"load-{index}").name for index in range(9)]

    result = run_load(stack, things, 4, prefix="stream", queued_before_start=False,
                      job_gap_seconds=0.2, timeout=150)

    assert len(result.expected) == 40
    assert result.problems == []


def test_idle_agent_given_periodic_jobs_keeps_fds_threads_and_memory_flat(stack, tmp_path):
    agent = AgentProcess(noop_agent_command(stack.thing("thing-1").settings_path),
                         tmp_path / "agent.log")
    with JobsObserver(privileged_connection(stack)) as observer:
        observer.watch("thing-1")
        with agent:
            samples = soak(stack, observer, agent, "thing-1", jobs=25,
                           interval_seconds=0.1, prefix="soak")

    warm, last = samples[4], samples[-1]
    assert last.fds == warm.fds
    assert last.threads == warm.threads
    assert last.rss_mib - warm.rss_mib < 2.0, [round(s.rss_mib, 2) for s in samples]
