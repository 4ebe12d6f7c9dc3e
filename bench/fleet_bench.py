"""A fleet job: CreateJob -> every execution SUCCEEDED for a 200-thing group job with a
rollout rate, beside a thing-ARN job on the same 200 things in the same run (the baseline).

Each thing runs a light paho client that answers ``notify-next`` with an update to SUCCEEDED
(the tightest a device can be); the clock runs from the CreateJob call to the last accepted
update. The group job goes through the rollout path (planned executions released by the
service at ``maximumPerMinute`` 1000, more than the fleet, so no minute is waited for): the
difference is what group expansion and the rollout bookkeeping cost.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from typing import Callable, List

import paho.mqtt.client as mqtt

from bench.context import BenchContext
from bench.mqtt_tls import tls_client
from bench.report import Row
from bench.sdk import Connection
from bench.stats import median

FLEET_THINGS = 200
GROUP = "bench-fleet"


class NotifiedDevice:
    """A thing that sets every execution ``notify-next`` names to SUCCEEDED at once."""

    def __init__(self, connection: Connection, on_success: Callable[[], None]) -> None:
        self.thing = connection.thing_name
        self.errors: List[str] = []
        self._on_success = on_success
        self._ready = threading.Event()
        self._prefix = f"$aws/things/{self.thing}/jobs"
        self._client = tls_client(connection, f"{self.thing}-fleet")
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_: self._ready.set()
        self._client.on_message = self._on_message
        self._connection = connection

    def connect(self) -> None:
        self._client.connect(self._connection.host, self._connection.port, keepalive=600)
        self._client.loop_start()

    def wait_ready(self, timeout: float = 20.0) -> None:
        if not self._ready.wait(timeout):
            raise TimeoutError(f"{self.thing}: no SUBACK within {timeout:g} s")

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        suffixes = ("notify-next", "+/update/accepted", "+/update/rejected")
        client.subscribe([(f"{self._prefix}/{suffix}", 1) for suffix in suffixes])

    def _on_message(self, client: mqtt.Client, _data: object, message: mqtt.MQTTMessage) -> None:
        suffix = message.topic[len(self._prefix) + 1 :]
        payload = json.loads(message.payload or b"{}")
        if suffix == "notify-next":
            execution = payload.get("execution")
            if execution:
                update = {"status": "SUCCEEDED", "expectedVersion": execution["versionNumber"]}
                client.publish(
                    f"{self._prefix}/{execution['jobId']}/update", json.dumps(update), qos=1
                )
        elif suffix.endswith("/update/accepted"):
            self._on_success()
        else:
            self.errors.append(f"{suffix}: {payload}")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class Fleet:
    """The bench things' devices and a count of their SUCCEEDED updates."""

    def __init__(self, connections: List[Connection]) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._target = 0
        self._done = threading.Event()
        self.devices = [NotifiedDevice(c, self._succeeded) for c in connections]

    def _succeeded(self) -> None:
        with self._lock:
            self._count += 1
            if self._count >= self._target:
                self._done.set()

    def __enter__(self) -> Fleet:
        for device in self.devices:
            device.connect()
        for device in self.devices:
            device.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        for device in self.devices:
            device.close()
        self.devices.clear()
        gc.collect()  # paho clients are reference cycles holding sockets (see service_bench)

    def time_job(self, create: Callable[[], None], timeout: float = 120.0) -> float:
        """Milliseconds from ``create()`` until every device reported SUCCEEDED."""
        with self._lock:
            self._count, self._target = 0, len(self.devices)
            self._done.clear()
        started = time.perf_counter()
        create()
        if not self._done.wait(timeout):
            raise RuntimeError(f"{self._count} of {self._target} SUCCEEDED in {timeout:g} s")
        elapsed = time.perf_counter() - started
        broken = {d.thing: d.errors[:2] for d in self.devices if d.errors}
        if broken:
            raise RuntimeError(f"rejected updates: {broken}")
        return elapsed * 1000.0


def group_job_rows(ctx: BenchContext) -> List[Row]:
    """CreateJob->all SUCCEEDED: 200-thing group job with a rollout vs a 200 thing-ARN job."""
    count = ctx.size(FLEET_THINGS, FLEET_THINGS)
    credentials = [ctx.thing(f"bench-fleet-{index:03d}") for index in range(count)]
    connections = [Connection.from_settings(item.settings_path) for item in credentials]
    arns = [item.arn for item in credentials]
    iot = ctx.iot
    iot.create_thing_group(thingGroupName=GROUP)
    for item in credentials:
        iot.add_thing_to_thing_group(thingGroupName=GROUP, thingName=item.name)
    group_arn = iot.describe_thing_group(thingGroupName=GROUP)["thingGroupArn"]
    document = json.dumps({"operation": "noop"})
    by_arn, by_group = [], []
    with Fleet(connections) as fleet:
        for run in range(ctx.runs):
            by_arn.append(
                fleet.time_job(
                    lambda run=run: iot.create_job(
                        jobId=f"fleet-arns-{run}", targets=arns, document=document
                    )
                )
            )
            by_group.append(
                fleet.time_job(
                    lambda run=run: iot.create_job(
                        jobId=f"fleet-group-{run}",
                        targets=[group_arn],
                        document=document,
                        jobExecutionsRolloutConfig={"maximumPerMinute": 1000},
                    )
                )
            )
    return [
        Row(
            f"fleet: CreateJob->all SUCCEEDED, {count}-thing group job, rollout 1000/min",
            median(by_group),
            "ms",
            median(by_arn),
            f"{count} thing-ARN job",
        )
    ]
