"""The heavy load runs (``bench/run.py --heavy``): many agents, a long soak.

The 1,000-job drain is ``agent_bench.drain_rows(ctx, 1000)``. Each run here also checks that
nothing was lost or run twice, and reports the count of such executions as a figure.
"""

from __future__ import annotations

from typing import List

from bench.agent_bench import queue_jobs, wait_until_claimed
from bench.agent_process import AgentProcess, noop_agent_command
from bench.context import BenchContext
from bench.load import run_load, soak
from bench.observer import JobsObserver
from bench.report import Row, Target
from bench.sdk import Connection
from bench.service_bench import run_device_loops


def many_agents_rows(ctx: BenchContext) -> List[Row]:
    """200 agents (threads, each its own thing, certificate and journal) against one service,
    each given a stream of jobs; baseline: bare device loops for as many things."""
    count = ctx.size(50, 200)
    jobs = 5
    things = [ctx.thing(f"bench-many-{index:03d}").name for index in range(count)]
    result = run_load(ctx.stack, things, jobs, prefix="many", queued_before_start=False,
                      job_gap_seconds=1.0, timeout=900)
    bare_things = [ctx.thing(f"bench-many-bare-{index:03d}").name for index in range(count)]
    queue_jobs(ctx, bare_things, "many-bare", jobs)
    connections = [Connection.from_settings(ctx.thing(thing).settings_path)
                   for thing in bare_things]
    bare = run_device_loops(connections, 900)
    return [
        Row(f"{count} agents x {jobs} streamed jobs: executions/s", result.per_second, "exec/s",
            bare, "bare device loops, queued jobs"),
        Row(f"{count} agents: executions lost, failed or run twice", len(result.problems),
            "executions", target=Target.below(1, "executions")),
    ]


def soak_rows(ctx: BenchContext) -> List[Row]:
    """The agent idle with a periodic job: memory, fds and threads after the first jobs and
    at the end."""
    jobs = ctx.size(60, 300)
    interval = 2.0
    thing = ctx.thing("bench-soak").name
    agent = AgentProcess(noop_agent_command(ctx.thing(thing).settings_path),
                         f"{ctx.directory}/soak-agent.log")
    with JobsObserver(ctx.privileged()) as observer:
        observer.watch(thing)
        with agent:
            wait_until_claimed(observer, agent, thing)
            samples = soak(ctx.stack, observer, agent, thing, jobs, interval, "soak")
    warm, last = samples[4], samples[-1]
    minutes = (last.at - warm.at) / 60
    label = f"soak ({jobs} jobs, one per {interval:g} s, {minutes:.0f} min)"
    return [
        Row(f"{label}: agent RSS at the end", last.rss_mib, "MiB", warm.rss_mib,
            "after 5 jobs", Target.below(30, "MiB")),
        Row(f"{label}: open fds at the end", last.fds, "fds", warm.fds, "after 5 jobs",
            Target.ratio_at_most(1.0)),
        Row(f"{label}: threads at the end", last.threads, "threads", warm.threads,
            "after 5 jobs", Target.ratio_at_most(1.0)),
    ]
