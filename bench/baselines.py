"""Baselines shared by several rows, each measured once per harness run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from bench import sdk
from bench.context import BenchContext
from bench.stats import median, percentile

ROUND_TRIP_THING = "bench-round-trip"


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


def bare_round_trip(ctx: BenchContext) -> Latency:
    """Bare SDK publish-to-own-subscription round trip on the stack's mutual-TLS broker."""

    def measure() -> Latency:
        credentials = ctx.thing(ROUND_TRIP_THING)
        connection = sdk.Connection.from_settings(credentials.settings_path)
        client = sdk.connect(connection)
        topic = f"$aws/things/{connection.thing_name}/bench/round-trip"
        try:
            count = ctx.size(300, 1000)
            return Latency.of_runs([sdk.round_trips(client, topic, count) for _ in range(ctx.runs)])
        finally:
            client.disconnect()

    return ctx.cached("bare_round_trip", measure)
