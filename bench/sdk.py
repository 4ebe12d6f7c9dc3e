"""The bare AWSIoTPythonSDK baselines: a publish-to-own-subscription round trip, an idle client.

These are what the agent is compared with: the same SDK, the same broker and certificates,
doing nothing but MQTT.
"""

from __future__ import annotations

import configparser
import socket
import threading
import time
from dataclasses import dataclass
from typing import List, Tuple

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


def connect(connection: Connection, client_id: str = "", *,
            no_delay: bool = False) -> AWSIoTMQTTClient:
    """A connected bare SDK client, configured as an agent would be (mutual TLS, no metrics).

    ``no_delay`` sets TCP_NODELAY on its socket (the SDK leaves Nagle's algorithm on), for
    clients that measure someone else's latency and must not add their own stalls to it.
    """
    client = AWSIoTMQTTClient(client_id or connection.thing_name)
    client.configureEndpoint(connection.host, connection.port)
    if no_delay:
        address = (connection.host, connection.port)
        client.configureSocketFactory(lambda: _no_delay_connection(address))
    client.configureCredentials(connection.root_ca, connection.private_key, connection.certificate)
    client.disableMetricsCollection()
    client.configureConnectDisconnectTimeout(10)
    client.configureMQTTOperationTimeout(10)
    client.connect(keepAliveIntervalSecond=600)
    return client


def _no_delay_connection(address: Tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def round_trips(client: AWSIoTMQTTClient, topic: str, count: int, *, warmup: int = 20,
                reply_topic: str = "", payload: str = "{}") -> List[float]:
    """Seconds from publishing on ``topic`` to a message arriving on ``reply_topic``.

    Without ``reply_topic`` the client subscribes to ``topic`` itself: the bare MQTT round
    trip (client -> broker -> client). QoS 1 both ways, as the Jobs requests and replies use.
    One request in flight at a time.
    """
    reply_topic = reply_topic or topic
    arrived = threading.Event()

    def on_message(_client: object, _userdata: object, _message: object) -> None:
        arrived.set()

    if not client.subscribe(reply_topic, 1, on_message):
        raise RuntimeError(f"subscribe to {reply_topic} was not acknowledged")
    samples: List[float] = []
    try:
        for index in range(warmup + count):
            arrived.clear()
            started = time.perf_counter()
            client.publish(topic, payload, 1)
            if not arrived.wait(10):
                raise TimeoutError(f"reply {index} on {reply_topic} did not come within 10 s")
            if index >= warmup:
                samples.append(time.perf_counter() - started)
    finally:
        client.unsubscribe(reply_topic)
    return samples
