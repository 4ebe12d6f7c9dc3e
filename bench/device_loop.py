"""The bare device loop: the fastest a device can drain its queue over the Jobs MQTT API.

One thread does start-next, waits for the reply, sends the final update (SUCCEEDED, or
REJECTED for the rejected-path baseline), waits for ``update/accepted``, and goes on until
start-next hands out nothing. It uses the agent's own client, AWSIoTPythonSDK with
TCP_NODELAY, and like any correct SDK program it publishes from its own thread, never from
the SDK's callback thread. Everything the agent does beyond this loop (journal, dispatch,
handler thread, status details) is what the drain ratio measures.
"""

from __future__ import annotations

import json
import queue
import time
from typing import Any, Tuple

from bench import sdk
from bench.sdk import Connection


class SdkDeviceLoop:
    """``SdkDeviceLoop(connection, "SUCCEEDED").drain(timeout) -> (jobs, seconds)``."""

    def __init__(self, connection: Connection, final_status: str = "SUCCEEDED") -> None:
        self.thing = connection.thing_name
        self.final_status = final_status
        self._connection = connection
        self._prefix = f"$aws/things/{self.thing}/jobs"
        self._replies: queue.Queue = queue.Queue()

    def _on_reply(self, _client: Any, _userdata: Any, message: Any) -> None:
        self._replies.put((message.topic[len(self._prefix) + 1:], bytes(message.payload)))

    def _reply(self, deadline: float) -> Tuple[str, dict]:
        try:
            suffix, payload = self._replies.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"{self.thing}: no reply before the deadline") from None
        return suffix, json.loads(payload or b"{}")

    def drain(self, timeout: float) -> Tuple[int, float]:
        """Drain the thing's queue; (jobs finished, seconds from the first start-next to the
        last accepted update). RuntimeError on any rejected request."""
        client = sdk.connect(self._connection, f"{self.thing}-sdk-loop", no_delay=True)
        try:
            for suffix in ("start-next/accepted", "start-next/rejected",
                           "+/update/accepted", "+/update/rejected"):
                if not client.subscribe(f"{self._prefix}/{suffix}", 1, self._on_reply):
                    raise RuntimeError(f"{self.thing}: subscribe to {suffix} not acknowledged")
            deadline = time.monotonic() + timeout
            finished = 0
            started = time.perf_counter()
            last = started
            while True:
                client.publish(f"{self._prefix}/start-next", "{}", 1)
                suffix, payload = self._reply(deadline)
                if suffix != "start-next/accepted":
                    raise RuntimeError(f"{self.thing}: {suffix}: {payload}")
                execution = payload.get("execution")
                if not execution:
                    return finished, last - started
                update = {"status": self.final_status,
                          "expectedVersion": execution.get("versionNumber")}
                client.publish(f"{self._prefix}/{execution['jobId']}/update", json.dumps(update), 1)
                suffix, payload = self._reply(deadline)
                if not suffix.endswith("/update/accepted"):
                    raise RuntimeError(f"{self.thing}: {suffix}: {payload}")
                finished += 1
                last = time.perf_counter()
        finally:
            client.disconnect()
