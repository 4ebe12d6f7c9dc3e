"""Baselines shared by several rows, each measured once per harness run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from bench import sdk
from bench.context import BenchContext
from bench.stats import median, percentile


@dataclass(frozen=True)
class Latency:
    """Median over repeated runs of each run's p50 and p99, in milliseconds."""

    p50_ms: float
    p99_ms: float

    @classmethod
    def of_runs(cls, runs: List[List[float]]) -> Latency:
        """Summarise runs of samples in seconds."""
        return cls(
            p50_ms=median([percentile(samples, 50) for samples in runs]) * 1000,
            p99_ms=median([percentile(samples, 99) for samples in runs]) * 1000,
        )


def _measure_round_trip(ctx: BenchContext, no_delay: bool) -> Latency:
    # Things may publish only Jobs requests, which the service would answer: the bare round
    # trip uses the privileged identity on a topic nothing else listens to.
    client = sdk.connect(ctx.privileged(), client_id="bench-round-trip", no_delay=no_delay)
    topic = "$aws/things/bench-round-trip/bench/round-trip"
    try:
        count = ctx.size(300, 1000)
        runs = [sdk.round_trips(client, topic, count, warmup=100) for _ in range(ctx.runs)]
        return Latency.of_runs(runs)
    finally:
        client.disconnect()


def bare_round_trip(ctx: BenchContext) -> Latency:
    """Bare SDK publish-to-own-subscription round trip on the stack's mutual-TLS broker, with
    TCP_NODELAY: the baseline every latency is compared with.

    With Nagle's algorithm on (the SDK's default) the same round trip costs 0.3 ms or 44 ms
    depending on how the broker batches its writes, which would make ratios measure the
    broker's socket options instead of the agent.
    """
    return ctx.cached("bare_round_trip", lambda: _measure_round_trip(ctx, no_delay=True))


def bare_round_trip_as_shipped(ctx: BenchContext) -> Latency:
    """The same round trip with the SDK's sockets as it makes them (Nagle on)."""
    return ctx.cached("bare_round_trip_nagle", lambda: _measure_round_trip(ctx, no_delay=False))
