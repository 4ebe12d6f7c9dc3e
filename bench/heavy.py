"""The heavy load runs (``bench/run.py --heavy``): many agents, a long soak.

The 1,000-job drain is ``agent_bench.drain_rows(ctx, 1000)``. The many-agents run also checks
that nothing was lost or run twice, and reports the count of such executions as a figure.
"""

from __future__ import annotations

from typing import List

from bench.agent_bench import wait_until_claimed
from bench.agent_process import AgentProcess, noop_agent_command
from bench.context import BenchContext
from bench.load import run_load, soak
from bench.observer import JobsObserver
from bench.report import Row, Target
from bench.stats import median, percentile


def many_agents_rows(ctx: BenchContext) -> List[Row]:
    """200 agents (threads, each its own thing, certificate and journal) against one service,
    each given the same stream of jobs; baseline: one agent given that stream alone."""
    count = ctx.size(50, 200)
    jobs = 5
    gap = 1.0
    alone = run_load(ctx.stack, [ctx.thing("bench-many-alone").name], jobs, prefix="alone",
                     queued_before_start=False, job_gap_seconds=gap, timeout=300)
    things = [ctx.thing(f"bench-many-{index:03d}").name for index in range(count)]
    result = run_load(ctx.stack, things, jobs, prefix="many", queued_before_start=False,
                      job_gap_seconds=gap, timeout=900)
    label = (f"{count} agents, a job for all every {gap:g} s ({jobs} jobs; "
             f"{len(result.latencies)} of {len(result.expected)} timed)")
    return [
        Row(f"{label}: CreateJob->SUCCEEDED p50", median(result.latencies), "s",
            median(alone.latencies), "one agent, same stream"),
        Row(f"{label}: CreateJob->SUCCEEDED p99", percentile(result.latencies, 99), "s",
            percentile(alone.latencies, 99), "one agent, same stream"),
        Row(f"{label}: executions lost, failed or run twice", len(result.problems + alone.problems),
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
