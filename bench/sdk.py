"""The bare AWSIoTPythonSDK baselines: a publish-to-own-subscription round trip, an idle client.

These are what the agent is compared with: the same SDK, the same broker and certificates,
doing nothing but MQTT.
"""

from __future__ import annotations

import configparser
import threading
import time
from dataclasses import dataclass
from typing import List

from AWSIoTPythonSDK.MQTTLib import AWSIoTMQTTClient


@dataclass(frozen=True)
class Connection:
    """Where and as whom to connect: the ``[connection]`` section of an agent settings file."""

    host: str
    port: int
    thing_name: str
    root_ca: str
    certificate: str
    private_key: str

    @classmethod
    def from_settings(cls, path: str) -> Connection:
        """Read ``[connection]`` of the settings file at ``path`` (KeyError names a missing key)."""
        parser = configparser.ConfigParser(interpolation=None)
        if not parser.read(path):
            raise FileNotFoundError(f"settings file {path} is missing or unreadable")
        section = parser["connection"]
        return cls(
            host=section["endpoint"],
            port=int(section.get("port", "8883")),
            thing_name=section["thing_name"],
            root_ca=section["root_ca"],
            certificate=section["certificate"],
            private_key=section["private_key"],
        )


def connect(connection: Connection, client_id: str = "") -> AWSIoTMQTTClient:
    """A connected bare SDK client, configured as an agent would be (mutual TLS, no metrics)."""
    client = AWSIoTMQTTClient(client_id or connection.thing_name)
    client.configureEndpoint(connection.host, connection.port)
    client.configureCredentials(connection.root_ca, connection.private_key, connection.certificate)
    client.disableMetricsCollection()
    client.configureConnectDisconnectTimeout(10)
    client.configureMQTTOperationTimeout(10)
    client.connect(keepAliveIntervalSecond=600)
    return client


def round_trips(client: AWSIoTMQTTClient, topic: str, count: int, warmup: int = 20) -> List[float]:
    """Seconds from ``publish`` to the message arriving at the client's own subscription.

    QoS 1 both ways, as the Jobs requests and replies use. One message in flight at a time.
    """
    arrived = threading.Event()

    def on_message(_client: object, _userdata: object, _message: object) -> None:
        arrived.set()

    if not client.subscribe(topic, 1, on_message):
        raise RuntimeError(f"subscribe to {topic} was not acknowledged")
    samples: List[float] = []
    try:
        for index in range(warmup + count):
            arrived.clear()
            started = time.perf_counter()
            client.publish(topic, b"{}", 1)
            if not arrived.wait(10):
                raise TimeoutError(f"message {index} on {topic} did not come back within 10 s")
            if index >= warmup:
                samples.append(time.perf_counter() - started)
    finally:
        client.unsubscribe(topic)
    return samples
