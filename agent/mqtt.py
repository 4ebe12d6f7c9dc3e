"""Build the AWSIoTPythonSDK client the agent uses, configured in one place.

Choices made here, and why:

- Offline publish queueing is disabled. The job client retries every request itself with a
  fresh ``clientToken`` and a current ``expectedVersion``; a request replayed by the SDK after
  a reconnect would carry stale ones. With the queue disabled a publish while offline raises
  at once and the client waits for the next ``onOnline``.
- Clean session. The client queries the service (start-next) on every connect, so nothing
  depends on the broker keeping messages across a disconnect (jobs-api.md §1.11); the SDK
  resubscribes by itself after a reconnect.
- Metrics collection is always disabled: the SDK would otherwise append its own
  ``?SDK=Python&Version=...`` string to the MQTT user name. AWS IoT ignores it for
  certificate authentication and a plain broker (mosquitto) would see a wrong user name, so
  leaving it out costs nothing and keeps the connection the same everywhere.
- Connection attempts are bounded. The SDK's vendored paho opens the TCP connection and does
  the TLS handshake on a socket without a timeout, on its network thread, also when it
  reconnects by itself; on a network that silently drops packets that blocks for many
  minutes. A socket factory gives the socket a timeout for the connect and the handshake
  (paho makes it non-blocking afterwards), so a dead path fails fast and is retried.
- TCP_NODELAY. The SDK leaves Nagle's algorithm on; every Jobs request is a small packet
  that waits for a reply, so Nagle plus the peer's delayed ACK added about 35 ms to each
  request/reply round trip (measured against the local service: a no-op job took 190 ms
  from start to the next claim, 110 ms with TCP_NODELAY).
- The SDK's event-consumer thread waits on a condition that every new event notifies, but
  with a 10 ms timeout, so an idle agent wakes 100 times a second. ``quiet_sdk_event_loop``
  raises that timeout; events still wake the thread at once, so no latency is added. The
  SDK's network thread (its vendored paho loop) waits in ``select`` for up to 1 s and is woken
  early by a socket pair on every publish, so it needs no change.
"""

from __future__ import annotations

import logging
import socket
from typing import Tuple

from AWSIoTPythonSDK.core.protocol.internal.workers import EventConsumer
from AWSIoTPythonSDK.MQTTLib import AWSIoTMQTTClient

from agent.settings import ConnectionSettings

log = logging.getLogger(__name__)

# The SDK's default is 0.01 s (AWSIoTPythonSDK/core/protocol/internal/workers.py). Its
# dispatch loop only needs the timeout to notice a stop request, which it also checks after
# every dispatched event, so waking once a second is plenty.
SDK_EVENT_WAIT_SECONDS = 1.0
KEEPALIVE_SECONDS = 60
CONNECT_TIMEOUT_SECONDS = 10
OPERATION_TIMEOUT_SECONDS = 5
RECONNECT_BASE_SECONDS = 1
RECONNECT_MAX_SECONDS = 32
STABLE_CONNECTION_SECONDS = 20


def quiet_sdk_event_loop() -> None:
    """Stop the SDK's event-consumer thread from polling every 10 ms (see module docstring)."""
    EventConsumer.MAX_DISPATCH_INTERNAL_SEC = SDK_EVENT_WAIT_SECONDS


def _open_socket(address: Tuple[str, int], timeout: float) -> socket.socket:
    """The TCP connection the SDK speaks TLS over: bounded connect and handshake, no Nagle."""
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def make_mqtt_client(
    connection: ConnectionSettings, *, connect_timeout_seconds: float = CONNECT_TIMEOUT_SECONDS
) -> AWSIoTMQTTClient:
    """A configured, not yet connected SDK client for ``connection`` (mutual TLS).

    Port 443 makes the SDK use ALPN (``x-amzn-mqtt-ca``), as AWS IoT requires there.
    ``connect_timeout_seconds`` bounds the TCP connect, the TLS handshake and the wait for
    the broker's CONNACK.
    """
    quiet_sdk_event_loop()
    address = (connection.endpoint, connection.port)
    client = AWSIoTMQTTClient(connection.client_id, cleanSession=True)
    client.configureEndpoint(connection.endpoint, connection.port)
    client.configureCredentials(
        str(connection.root_ca), str(connection.private_key), str(connection.certificate)
    )
    client.configureAutoReconnectBackoffTime(
        RECONNECT_BASE_SECONDS, RECONNECT_MAX_SECONDS, STABLE_CONNECTION_SECONDS
    )
    client.configureOfflinePublishQueueing(0)
    client.configureSocketFactory(lambda: _open_socket(address, connect_timeout_seconds))
    client.configureConnectDisconnectTimeout(connect_timeout_seconds)
    client.configureMQTTOperationTimeout(OPERATION_TIMEOUT_SECONDS)
    client.disableMetricsCollection()
    log.debug(
        "MQTT client %s for %s:%s configured",
        connection.client_id,
        connection.endpoint,
        connection.port,
    )
    return client
