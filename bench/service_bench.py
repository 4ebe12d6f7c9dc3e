"""The local Jobs service under load: job executions per second for many things, and its
request-to-response latency, each beside a bare MQTT baseline from the same run.

Throughput: every thing runs the tightest device loop there is (start-next, then update to
SUCCEEDED, again until nothing is left) on a light paho client. The baseline is the same
clients and broker answered by a bare responder that does nothing but reply, with the service
stopped meanwhile: the difference is what the service itself costs.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from typing import Callable, Dict, List

import paho.mqtt.client as mqtt

from bench import sdk
from bench.baselines import Latency, bare_round_trip
from bench.context import BenchContext
from bench.mqtt_tls import tls_client
from bench.report import Row
from bench.sdk import Connection
from bench.stats import median


class DeviceLoop:
    """One thing taking jobs with start-next and reporting SUCCEEDED until none is left.

    ``done`` is set when start-next answers with no execution; ``completed`` counts the
    accepted SUCCEEDED updates and ``errors`` every rejected reply.
    """

    def __init__(self, connection: Connection) -> None:
        self.thing = connection.thing_name
        self.completed = 0
        self.errors: List[str] = []
        self.done = threading.Event()
        self._ready = threading.Event()
        self._prefix = f"$aws/things/{self.thing}/jobs"
        self._client = tls_client(connection, f"{self.thing}-loop")
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_: self._ready.set()
        self._client.on_message = self._on_message
        self._connection = connection
        self._connect_result = "none yet"

    def connect(self) -> None:
        """Connect and subscribe to the replies; start a network thread."""
        self._client.connect(self._connection.host, self._connection.port, keepalive=600)
        self._client.loop_start()

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Block until the reply subscriptions are acknowledged."""
        if not self._ready.wait(timeout):
            state = "connected" if self._client.is_connected() else "not connected"
            raise TimeoutError(f"{self.thing}: no SUBACK within {timeout:g} s ({state}, "
                               f"connect result {self._connect_result})")

    def _on_connect(self, client: mqtt.Client, _userdata: object, _flags: object,
                    reason_code: object, *_: object) -> None:
        self._connect_result = str(reason_code)
        replies = ("start-next/accepted", "start-next/rejected",
                   "+/update/accepted", "+/update/rejected")
        client.subscribe([(f"{self._prefix}/{suffix}", 1) for suffix in replies])

    def start(self) -> None:
        """Ask for the first job."""
        self._client.publish(f"{self._prefix}/start-next", "{}", qos=1)

    def _on_message(self, client: mqtt.Client, _data: object, message: mqtt.MQTTMessage) -> None:
        suffix = message.topic[len(self._prefix) + 1:]
        payload = json.loads(message.payload or b"{}")
        if suffix == "start-next/accepted":
            execution = payload.get("execution")
            if not execution:
                self.done.set()
                return
            update = {"status": "SUCCEEDED", "expectedVersion": execution.get("versionNumber")}
            client.publish(f"{self._prefix}/{execution['jobId']}/update", json.dumps(update), qos=1)
        elif suffix.endswith("/update/accepted"):
            self.completed += 1
            self.start()
        else:
            self.errors.append(f"{suffix}: {payload}")
            if len(self.errors) > 10:
                self.done.set()
            else:
                self.start()

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()


class BareResponder:
    """A privileged client answering start-next and update for every thing, doing nothing else.

    Each thing gets ``jobs_per_thing`` made-up executions, then an empty start-next reply.
    """

    def __init__(self, connection: Connection, jobs_per_thing: int) -> None:
        self._left: Dict[str, int] = {}
        self._jobs_per_thing = jobs_per_thing
        self._ready = threading.Event()
        self._client = tls_client(connection, "bench-bare-responder")
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: self._ready.set()
        self._connection = connection

    def __enter__(self) -> BareResponder:
        self._client.connect(self._connection.host, self._connection.port, keepalive=600)
        self._client.loop_start()
        self._client.subscribe([("$aws/things/+/jobs/start-next", 1),
                                ("$aws/things/+/jobs/+/update", 1)])
        if not self._ready.wait(10):
            raise TimeoutError("bare responder: no SUBACK within 10 s")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, client: mqtt.Client, _data: object, message: mqtt.MQTTMessage) -> None:
        thing = message.topic.split("/")[2]
        if message.topic.endswith("/start-next"):
            left = self._left.setdefault(thing, self._jobs_per_thing)
            reply: dict = {"timestamp": int(time.time())}
            if left:
                self._left[thing] = left - 1
                reply["execution"] = {"jobId": f"bare-{left}", "status": "IN_PROGRESS",
                                      "versionNumber": 2, "executionNumber": 1,
                                      "jobDocument": {"operation": "noop"}}
            client.publish(message.topic + "/accepted", json.dumps(reply), qos=1)
        else:
            client.publish(message.topic + "/accepted", json.dumps({"timestamp": 1}), qos=1)


def run_device_loops(connections: List[Connection], timeout: float) -> float:
    """Run every thing's device loop at once; returns executions completed per second.

    Raises RuntimeError naming the things whose requests were rejected or that did not finish.
    """
    loops = [DeviceLoop(connection) for connection in connections]
    try:
        for loop in loops:
            loop.connect()
        for loop in loops:
            loop.wait_ready()
        started = time.perf_counter()
        for loop in loops:
            loop.start()
        deadline = time.monotonic() + timeout
        for loop in loops:
            if not loop.done.wait(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"{loop.thing}: jobs not drained within {timeout:g} s")
        elapsed = time.perf_counter() - started
        broken = {loop.thing: loop.errors[:2] for loop in loops if loop.errors}
        completed = sum(loop.completed for loop in loops)
    finally:
        for loop in loops:
            loop.close()
        del loops[:]
        # paho closes a client's wake-up socket pair only when the client is freed, and each
        # loop is a reference cycle (client -> bound callback -> loop): collect them now, or
        # a few runs push the harness past select()'s 1024-descriptor limit.
        gc.collect()
    if broken:
        raise RuntimeError(f"rejected requests: {broken}")
    return completed / elapsed


def measure_with_bare_responder(privileged: Connection, connections: List[Connection],
                                jobs_per_thing: int, timeout: float,
                                pause_service: Callable[[], None],
                                resume_service: Callable[[], None]) -> float:
    """Executions per second of the same device loops answered by ``BareResponder``."""
    pause_service()
    try:
        with BareResponder(privileged, jobs_per_thing):
            return run_device_loops(connections, timeout)
    finally:
        resume_service()


SERVICE_THINGS = 100
LATENCY_THING = "bench-service-latency"


def _create_jobs(iot: object, prefix: str, count: int, arns: List[str]) -> None:
    for index in range(count):
        iot.create_job(jobId=f"{prefix}-{index}", targets=arns,  # type: ignore[attr-defined]
                       document=json.dumps({"operation": "noop"}))


def throughput_rows(ctx: BenchContext) -> List[Row]:
    """Job executions per second the service moves for 100 things, vs the bare responder."""
    credentials = [ctx.thing(f"bench-svc-{index:03d}") for index in range(SERVICE_THINGS)]
    connections = [Connection.from_settings(item.settings_path) for item in credentials]
    arns = [item.arn for item in credentials]
    jobs_per_thing = ctx.size(3, 10)
    timeout = 120.0
    bare, served = [], []
    for run in range(ctx.runs):
        bare.append(measure_with_bare_responder(
            ctx.privileged(), connections, jobs_per_thing, timeout,
            ctx.stack.kill_service, ctx.stack.start_service))
        _create_jobs(ctx.iot, f"svc-{run}", jobs_per_thing, arns)
        served.append(run_device_loops(connections, timeout))
    return [Row(f"service: job executions/s, {SERVICE_THINGS} things x {jobs_per_thing} jobs",
                median(served), "exec/s", median(bare), "bare MQTT responder")]


def latency_rows(ctx: BenchContext) -> List[Row]:
    """The service's request-to-response latency (``get``), vs the bare SDK round trip."""
    bare = bare_round_trip(ctx)
    connection = Connection.from_settings(ctx.thing(LATENCY_THING).settings_path)
    client = sdk.connect(connection, no_delay=True)
    topic = f"$aws/things/{connection.thing_name}/jobs/get"
    try:
        count = ctx.size(100, 500)
        runs = [sdk.round_trips(client, topic, count, reply_topic=f"{topic}/accepted")
                for _ in range(ctx.runs)]
    finally:
        client.disconnect()
    latency = Latency.of_runs(runs)
    return [
        Row("service: get request->accepted p50", latency.p50_ms, "ms", bare.p50_ms,
            "bare SDK round trip p50"),
        Row("service: get request->accepted p99", latency.p99_ms, "ms", bare.p99_ms,
            "bare SDK round trip p99"),
    ]
