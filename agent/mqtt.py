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
import random
import socket
import threading
from typing import Any, Callable, Optional, Sequence, Tuple

from AWSIoTPythonSDK.core.protocol.internal.workers import EventConsumer
from AWSIoTPythonSDK.exception.operationError import operationError
from AWSIoTPythonSDK.exception.operationTimeoutException import operationTimeoutException
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
    # The SDK's own reconnect backoff has no jitter: a random base and cap per agent keep a
    # fleet that lost its broker at the same moment from reconnecting in lockstep.
    client.configureAutoReconnectBackoffTime(
        jittered(RECONNECT_BASE_SECONDS),
        jittered(RECONNECT_MAX_SECONDS),
        STABLE_CONNECTION_SECONDS,
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


# The SDK's errors for a request it could not make (not connected, a timeout), and the
# socket's own: the only exceptions a connection call lets through.
SDK_ERRORS = (operationError, operationTimeoutException, OSError)

QOS = 1
FIRST_CONNECT_DELAY_SECONDS = 1.0
MAX_CONNECT_DELAY_SECONDS = 60.0


def jittered(delay: float) -> float:
    """``delay`` stretched by a random 0-50 %, so a fleet that lost its broker at the same
    moment does not reconnect in lockstep (never shorter: the backoff stays a bound)."""
    return delay * random.uniform(1.0, 1.5)


class JobsConnection:
    """The agent's MQTT link: the one place the SDK is called.

    Wraps a configured, not yet connected ``AWSIoTMQTTClient`` (``make_mqtt_client``; tests
    pass a stand-in with the same methods). ``connect`` retries with jittered backoff;
    ``publish`` says whether the message was handed to the SDK; SDK errors never escape.
    ``explain_failure`` may say why connecting fails in an operator's terms (which setting is
    at fault); the first failure, and each new kind of failure, is logged with it once, the
    retries that follow only at DEBUG.
    """

    def __init__(
        self,
        client: Any,
        *,
        keepalive_seconds: int = KEEPALIVE_SECONDS,
        explain_failure: Optional[Callable[[], Optional[str]]] = None,
    ) -> None:
        self._client = client
        self._keepalive = keepalive_seconds
        self._explain = explain_failure
        self._last_logged: Optional[str] = None
        self.connected_once = False

    def on_state(self, online: Callable[[], None], offline: Callable[[], None]) -> None:
        """Call ``online``/``offline`` (on the SDK's callback thread) as the link changes."""
        self._client.onOnline = online
        self._client.onOffline = offline

    def explanation(self) -> str:
        """ "; <why>" when the caller can tell why connecting fails (an expired certificate)."""
        why = self._explain() if self._explain is not None else None
        return f"; {why}" if why else ""

    def connect(
        self,
        topics: Sequence[str],
        on_message: Callable[[Any, Any, Any], None],
        stop: threading.Event,
        on_failure: Callable[[str], None] = lambda error: None,
    ) -> bool:
        """Connect and subscribe to ``topics`` (QoS 1), retrying with jittered backoff until
        it works (True) or ``stop`` is set (False). ``on_failure`` hears each failure."""
        delay = FIRST_CONNECT_DELAY_SECONDS
        while not stop.is_set():
            try:
                self._client.connect(self._keepalive)
                try:
                    for topic in topics:
                        self._client.subscribe(topic, QOS, on_message)
                except SDK_ERRORS:
                    self.disconnect()
                    raise
                self.connected_once = True
                self._last_logged = None
                return True
            except SDK_ERRORS as error:
                wait = jittered(delay)
                self._log_failure(error, wait)
                on_failure(f"{type(error).__name__}: {error}{self.explanation()}")
                if isinstance(error, operationTimeoutException):
                    # The SDK keeps its network thread after a connect timeout: stop it, or
                    # the next connect() would run beside it.
                    self.disconnect()
            if stop.wait(wait):
                break
            delay = min(delay * 2, MAX_CONNECT_DELAY_SECONDS)
        return False

    def _log_failure(self, error: BaseException, wait: float) -> None:
        text = f"{type(error).__name__}: {error}"
        if text == self._last_logged:
            log.debug("cannot connect or subscribe (%s); retrying in %.0f s", text, wait)
            return
        self._last_logged = text
        log.error(
            "cannot connect or subscribe (%s)%s; retrying in %.0f s, then quietly with backoff",
            text,
            self.explanation(),
            wait,
        )

    def publish(self, topic: str, payload: str) -> bool:
        """Hand ``payload`` to the SDK (QoS 1, not waiting for the broker); False when it
        could not (not connected, or the SDK still resubscribing after a reconnect)."""
        try:
            self._client.publishAsync(topic, payload, QOS)
            return True
        except SDK_ERRORS as error:
            log.debug("publish to %s failed: %s", topic, error)
            return False

    def disconnect(self) -> None:
        """Disconnect; a failure is logged, never raised."""
        try:
            self._client.disconnect()
        except SDK_ERRORS as error:
            log.warning("disconnect failed: %s", error)
