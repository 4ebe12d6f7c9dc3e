"""A loopback TCP proxy between an agent and the broker that misbehaves on command.

Used by the resilience tests to cut, silence and slow the network without touching either end::

    proxy = FaultProxy(target_port=stack.mqtt_port).start()
    # point the agent at 127.0.0.1:proxy.port instead of the broker
    proxy.cut()                 # close every open connection now (the peers see a reset)
    proxy.refuse()              # and close every new one at once, until restore()
    proxy.blackhole("down")     # keep connections open but drop broker-to-agent bytes
    proxy.delay(0.5)            # hold every chunk half a second in both directions
    proxy.delay(1.0, "down")    # or only the broker's replies
    proxy.restore()             # forward normally again; connections that lost bytes are cut
    proxy.attempts_since(t0)    # TCP connections accepted since monotonic time t0

The proxy sees TLS bytes only: it knows nothing of MQTT, so faults are timed by the test.
It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import List, Optional, Set, Tuple

log = logging.getLogger(__name__)

UP = "up"  # agent to broker
DOWN = "down"  # broker to agent
BOTH = "both"
_CHUNK = 65536


def _directions(direction: str) -> Tuple[str, ...]:
    if direction not in (UP, DOWN, BOTH):
        raise ValueError(f"direction must be {UP!r}, {DOWN!r} or {BOTH!r}, got {direction!r}")
    return (UP, DOWN) if direction == BOTH else (direction,)


class _Pair:
    """One proxied connection: the agent's socket and ours to the broker."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.lost_bytes = False  # bytes were dropped: the TLS stream is broken for good
        self.closed = threading.Event()

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host``:``target_port``, with faults on command."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()  # guards _pairs, _accepted and the fault settings
        self._pairs: Set[_Pair] = set()
        self._accepted: List[float] = []
        self._refusing = False
        self._dropping: Set[str] = set()
        self._delays = {UP: 0.0, DOWN: 0.0}
        self._stopped = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # lifecycle

    def start(self) -> FaultProxy:
        self._listener.listen(64)
        self._thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection."""
        self._stopped.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self.cut()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # faults

    def cut(self) -> int:
        """Close every open connection; return how many there were."""
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
        for pair in pairs:
            pair.close()
        if pairs:
            log.info("fault proxy: cut %d connection(s)", len(pairs))
        return len(pairs)

    def refuse(self) -> None:
        """Cut every connection and close new ones as soon as they are accepted."""
        with self._lock:
            self._refusing = True
        self.cut()

    def blackhole(self, direction: str = BOTH) -> None:
        """Keep connections open but silently drop the bytes going ``direction``."""
        with self._lock:
            self._dropping = set(_directions(direction))

    def delay(self, seconds: float, direction: str = BOTH) -> None:
        """Hold every chunk going ``direction`` for ``seconds`` before forwarding it; a chunk
        held when a blackhole starts is dropped."""
        if seconds < 0:
            raise ValueError(f"delay must not be negative, got {seconds}")
        with self._lock:
            for way in _directions(direction):
                self._delays[way] = float(seconds)

    def restore(self) -> None:
        """Forward normally again; connections that lost bytes are cut (their stream is broken)."""
        with self._lock:
            self._refusing = False
            self._dropping = set()
            self._delays = {UP: 0.0, DOWN: 0.0}
            broken = [pair for pair in self._pairs if pair.lost_bytes]
            for pair in broken:
                self._pairs.discard(pair)
        for pair in broken:
            pair.close()

    # observation

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def attempts_since(self, since: float) -> int:
        """TCP connections accepted at or after ``since`` (a ``time.monotonic()`` value)."""
        with self._lock:
            return sum(1 for at in self._accepted if at >= since)

    def accept_times(self) -> Tuple[float, ...]:
        """``time.monotonic()`` of every accepted connection, oldest first."""
        with self._lock:
            return tuple(self._accepted)

    # internals

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._accepted.append(time.monotonic())
                refusing = self._refusing
            if refusing:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError as error:
                log.info("fault proxy: broker unreachable (%s); closing the client", error)
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.add(pair)
            for source, sink, direction in ((client, upstream, UP), (upstream, client, DOWN)):
                threading.Thread(
                    target=self._pump,
                    args=(pair, source, sink, direction),
                    name=f"fault-proxy-{direction}",
                    daemon=True,
                ).start()

    def _pump(
        self, pair: _Pair, source: socket.socket, sink: socket.socket, direction: str
    ) -> None:
        try:
            while not pair.closed.is_set():
                data = source.recv(_CHUNK)
                if not data:
                    break
                with self._lock:
                    delay = self._delays[direction]
                if delay:
                    time.sleep(delay)
                with self._lock:
                    dropping = direction in self._dropping
                if dropping:
                    pair.lost_bytes = True
                    continue
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._pairs.discard(pair)
            pair.close()
