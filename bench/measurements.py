"""Every measurement the harness knows, in the order the table shows them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List

from bench.agent_bench import drain_rows, idle_rows, turnaround_rows
from bench.apt_bench import apt_rows
from bench.baselines import bare_round_trip, bare_round_trip_as_shipped
from bench.context import BenchContext
from bench.fleet_bench import group_job_rows
from bench.heavy import many_agents_rows, soak_rows
from bench.report import Row
from bench.service_bench import latency_rows, throughput_rows
from bench.signing_bench import signing_rows


@dataclass(frozen=True)
class Measurement:
    """A named measurement: ``run(ctx)`` returns its rows; ``heavy`` ones run only with --heavy."""

    name: str
    description: str
    run: Callable[[BenchContext], List[Row]]
    heavy: bool = False


def _round_trip_rows(ctx: BenchContext) -> List[Row]:
    baseline, as_shipped = bare_round_trip(ctx), bare_round_trip_as_shipped(ctx)
    return [
        Row("bare SDK round trip p50, TCP_NODELAY (the baseline)", baseline.p50_ms, "ms"),
        Row("bare SDK round trip p99, TCP_NODELAY (the baseline)", baseline.p99_ms, "ms"),
        Row("bare SDK round trip p50, sockets as shipped", as_shipped.p50_ms, "ms"),
        Row("bare SDK round trip p99, sockets as shipped", as_shipped.p99_ms, "ms"),
    ]


MEASUREMENTS: List[Measurement] = [
    Measurement("round_trip", "bare SDK publish-to-own-subscription round trip",
                _round_trip_rows),
    Measurement("idle", "agent vs bare SDK client: idle CPU and RSS", idle_rows),
    Measurement("turnaround", "no-op job claim->SUCCEEDED vs bare round trip", turnaround_rows),
    Measurement("drain", "one agent draining 500 queued no-op jobs, then 500 it rejects",
                drain_rows),
    Measurement("apt", "APT_UPDATE vs apt-get install -y; agent RSS around an APT job",
                apt_rows),
    Measurement("signing", "signed documents: idle and no-op job turnaround, signing on vs off",
                signing_rows),
    Measurement("service_latency", "local Jobs service get request->accepted latency",
                latency_rows),
    Measurement("service_throughput", "local Jobs service executions/s for 100 things",
                throughput_rows),
    Measurement("fleet_group_job", "200-thing group job with a rollout vs a thing-ARN job",
                group_job_rows),
    Measurement("drain_1000", "one agent draining 1,000 queued no-op jobs",
                lambda ctx: drain_rows(ctx, 1000), heavy=True),
    Measurement("agents_200", "200 agents against one service, a stream of jobs each",
                many_agents_rows, heavy=True),
    Measurement("soak", "idle agent with periodic jobs: memory, fds, threads stay flat",
                soak_rows, heavy=True),
]
