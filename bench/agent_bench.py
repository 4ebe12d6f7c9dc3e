"""The agent measured from outside: idle CPU and memory, no-op job turnaround, draining a queue.

The agent runs as its own process (``jobs_agent.py``, or ``bench/noop_agent.py`` which is the
same agent plus a NOOP job type), so /proc accounts for it alone; its requests and the
service's replies are timed by a privileged observer on the broker (``observer.py``).
"""

from __future__ import annotations

import time
from typing import List

from bench import procstat
from bench.agent_process import (
    AgentProcess,
    noop_agent_command,
    real_agent_command,
    sdk_idle_command,
)
from bench.baselines import Latency, bare_round_trip
from bench.context import BenchContext
from bench.device_loop import SdkDeviceLoop
from bench.load import NOOP_DOCUMENT, run_noop_job
from bench.observer import JobsObserver
from bench.report import Row, Target
from bench.sdk import Connection
from bench.stats import median, median_pair

IDLE_GAP_SECONDS = 0.2  # each no-op job finds the agent idle, not finishing the last one
SETTLE_SECONDS = 3.0  # after start-up, before an idle window: imports and TLS are not idling


def wait_until_claimed(observer: JobsObserver, agent: AgentProcess, thing: str,
                       timeout: float = 30.0) -> None:
    """Block until the agent's first start-next was answered (it is connected and subscribed)."""
    def answered() -> bool:
        agent.check_running()
        return any(item.thing == thing and item.suffix.startswith("start-next/")
                   for item in observer.seen())
    observer.wait_for(answered, timeout, f"start-next reply to {thing}")


def idle_rows(ctx: BenchContext) -> List[Row]:
    """The real agent and a bare SDK client, idle side by side over the same windows."""
    window = ctx.size(10.0, 60.0)
    runs = min(ctx.runs, 3)
    agent_thing, bare_thing = ctx.thing("bench-idle-agent"), ctx.thing("bench-idle-sdk")
    agent = AgentProcess(real_agent_command(agent_thing.settings_path),
                         f"{ctx.directory}/idle-agent.log")
    bare = AgentProcess(sdk_idle_command(bare_thing.settings_path),
                        f"{ctx.directory}/idle-sdk.log")
    with JobsObserver(ctx.privileged()) as observer:
        observer.watch(agent_thing.name)
        with agent, bare:
            wait_until_claimed(observer, agent, agent_thing.name)
            bare.wait_for_output("ready")
            time.sleep(SETTLE_SECONDS)
            cpu_agent, cpu_bare, rss_agent, rss_bare = [], [], [], []
            exact_agent, exact_bare = [], []
            for _ in range(runs):
                agent_window, bare_window = procstat.measure_cpu([agent.pid, bare.pid], window)
                cpu_agent.append(agent_window.percent)
                cpu_bare.append(bare_window.percent)
                exact_agent.append(agent_window.thread_run_percent)
                exact_bare.append(bare_window.thread_run_percent)
                rss_agent.append(procstat.rss_mib(agent.pid))
                rss_bare.append(procstat.rss_mib(bare.pid))
            ctx.remember("agent_idle_rss_mib", median(rss_agent))
    return [
        Row(f"agent idle CPU, utime+stime ({window:.0f} s windows)", median(cpu_agent), "% CPU",
            median(cpu_bare), "bare SDK client idle", Target.ratio_at_most(0.1)),
        Row("agent idle CPU, per-thread schedstat (ns)", median(exact_agent), "% CPU",
            median(exact_bare), "bare SDK client idle", Target.ratio_at_most(0.1)),
        Row("agent idle RSS", median(rss_agent), "MiB", median(rss_bare),
            "bare SDK client idle", Target.below(30, "MiB")),
    ]


def turnaround_rows(ctx: BenchContext) -> List[Row]:
    """No-op job turnaround, claim (start-next) to SUCCEEDED accepted, vs the bare round trip."""
    bare = bare_round_trip(ctx)
    thing = ctx.thing("bench-noop").name
    per_run = ctx.size(20, 100)
    claim_runs: List[List[float]] = []
    create_runs: List[List[float]] = []
    agent = AgentProcess(noop_agent_command(ctx.thing(thing).settings_path),
                         f"{ctx.directory}/noop-agent.log")
    with JobsObserver(ctx.privileged()) as observer:
        observer.watch(thing)
        with agent:
            wait_until_claimed(observer, agent, thing)
            iot, arn = ctx.iot, ctx.thing(thing).arn
            for run in range(ctx.runs):
                claims, creates = [], []
                for index in range(per_run):
                    job_id = f"noop-{run}-{index}"
                    time.sleep(IDLE_GAP_SECONDS)
                    created, finished = run_noop_job(iot, observer, arn, thing, job_id)
                    claims.append(finished - observer.first_claim(thing, created, job_id))
                    creates.append(finished - created)
                claim_runs.append(claims)
                create_runs.append(creates)
    claim, create = Latency.of_runs(claim_runs), Latency.of_runs(create_runs)
    bare_job_ms = bare_loop_job_ms(ctx)
    return [
        Row("no-op job turnaround p50 (claim->SUCCEEDED)", claim.p50_ms, "ms", bare_job_ms,
            "bare SDK device loop, ms per job", Target.ratio_at_most(4)),
        Row("no-op job turnaround p50 (claim->SUCCEEDED)", claim.p50_ms, "ms", bare.p50_ms,
            "bare SDK round trip p50"),
        Row("no-op job turnaround p99 (claim->SUCCEEDED)", claim.p99_ms, "ms", bare.p99_ms,
            "bare SDK round trip p99"),
        Row("no-op job CreateJob->SUCCEEDED p50", create.p50_ms, "ms", bare.p50_ms,
            "bare SDK round trip p50"),
    ]


def queue_jobs(ctx: BenchContext, things: List[str], prefix: str, count: int,
               document: str = NOOP_DOCUMENT) -> None:
    """Queue ``count`` jobs (NOOP by default), each targeting every one of ``things``."""
    arns = [ctx.thing(thing).arn for thing in things]
    for index in range(count):
        ctx.iot.create_job(jobId=f"{prefix}-{index}", targets=arns, document=document)


def bare_loop_rate(ctx: BenchContext, thing: str, timeout: float,
                   final_status: str = "SUCCEEDED") -> float:
    """Jobs per second the bare SDK device loop drains ``thing``'s queue at, watched by the
    same observer as the agent's drain (its subscription costs the service the same work)."""
    loop = SdkDeviceLoop(Connection.from_settings(ctx.thing(thing).settings_path), final_status)
    with JobsObserver(ctx.privileged()) as observer:
        observer.watch(thing)
        finished, seconds = loop.drain(timeout)
    if finished == 0 or seconds <= 0:
        raise RuntimeError(f"{thing}: the bare device loop drained nothing")
    return finished / seconds


def bare_loop_job_ms(ctx: BenchContext) -> float:
    """Milliseconds per job of the bare SDK device loop (the turnaround baseline)."""
    def measure() -> float:
        thing = "bench-bare-loop"
        queue_jobs(ctx, [thing], "bare-loop", ctx.size(200, 500))
        return 1000.0 / bare_loop_rate(ctx, thing, 600.0)
    return ctx.cached("bare_loop_job_ms", measure)


def drain_rate(ctx: BenchContext, thing: str, count: int, timeout: float) -> float:
    """Jobs per second the agent drains the ``count`` NOOP jobs queued for ``thing`` at (first
    claim to last SUCCEEDED); RuntimeError unless each succeeded once within ``timeout``."""
    agent = AgentProcess(noop_agent_command(ctx.thing(thing).settings_path),
                         f"{ctx.directory}/{thing}.log")
    with JobsObserver(ctx.privileged()) as observer:
        observer.watch(thing)
        started = time.perf_counter()
        with agent:
            def drained() -> bool:
                agent.check_running()
                return observer.finished_count >= count
            observer.wait_for(drained, timeout, f"{count} jobs finished by {thing}")
    finished = observer.finished(started).get(thing, {})
    if len(finished) != count or observer.finished_twice(started):
        raise RuntimeError(f"{thing}: {len(finished)} of {count} jobs finished, "
                           f"twice: {observer.finished_twice(started)}")
    return count / (max(finished.values()) - observer.first_claim(thing, started))


REJECTED_DOCUMENT = '{"jobType": "NO_SUCH_JOB_TYPE"}'  # no handler accepts it: REJECTED


def drain_rows(ctx: BenchContext, count: int = 500) -> List[Row]:
    """Draining ``count`` queued no-op jobs, and ``count`` jobs no handler accepts, each vs the
    bare SDK device loop draining the same jobs (each job targets both things).

    Each run drains the agent's queue and the bare loop's back to back, in turn first, and
    the pair with the median ratio is shown (``median_pair``): this machine's speed drifts
    from one run to the next far more than the two sides differ."""
    runs = ctx.size(1, ctx.runs)  # each run queues and drains twice ``count`` jobs
    timeout = 900.0
    rows = []
    paths = (("no-op jobs", NOOP_DOCUMENT, "SUCCEEDED"),
             ("jobs no handler accepts", REJECTED_DOCUMENT, "REJECTED"))
    for label, document, final_status in paths:
        pairs = []
        for run in range(runs):
            tag = f"{count}-{final_status.lower()}-{run}"
            agent_thing, bare_thing = f"bench-drain{tag}", f"bench-drain{tag}-bare"
            queue_jobs(ctx, [agent_thing, bare_thing], f"drain{tag}", count, document)
            if run % 2:
                bare = bare_loop_rate(ctx, bare_thing, timeout, final_status)
                agent = drain_rate(ctx, agent_thing, count, timeout)
            else:
                agent = drain_rate(ctx, agent_thing, count, timeout)
                bare = bare_loop_rate(ctx, bare_thing, timeout, final_status)
            pairs.append((agent, bare))
        agent, bare = median_pair(pairs)
        which = f", the median of {runs} pairs" if runs > 1 else ""
        rows.append(Row(f"draining {count} queued {label} ({final_status})", agent, "jobs/s",
                        bare, f"bare SDK device loop, same service{which}",
                        Target.ratio_at_least(0.8)))
    return rows
