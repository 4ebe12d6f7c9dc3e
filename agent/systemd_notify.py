"""Tell systemd about the agent's state (sd_notify): readiness, watchdog pings, status, stopping.

The protocol is one datagram per message to the AF_UNIX socket systemd names in
``NOTIFY_SOCKET`` (a path, or an abstract socket when it starts with ``@``), written here with
the standard library. Neither the unmaintained ``sdnotify`` nor python3-systemd is used:
python3-systemd's ``daemon.notify`` reads ``NOTIFY_SOCKET`` from the environment at every call,
and the agent takes it out of the environment at start so that its children (dpkg, maintainer
scripts) do not inherit it. Everything here is a no-op when the agent is not started by systemd
with ``Type=notify`` (no ``NOTIFY_SOCKET``), so the agent runs the same from a shell, from
``start.sh`` and under systemd.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Optional

log = logging.getLogger(__name__)

_NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class SystemdNotifier:
    """Sends sd_notify messages to the socket systemd named in ``NOTIFY_SOCKET``.

    Reads ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` once, when made, and by
    default removes them from ``os.environ``, so the processes the agent starts (the apt worker,
    dpkg and the maintainer scripts it runs) do not inherit the agent's notify socket
    (the same as ``sd_notify(unset_environment=1)``). Send failures are logged, never raised:
    telling systemd is never a reason for the agent to fail.
    """

    def __init__(self, *, unset_environment: bool = True) -> None:
        values = {name: os.environ.get(name) for name in _NOTIFY_VARIABLES}
        self._socket_path = values["NOTIFY_SOCKET"] or None
        self._watchdog_interval = _parse_watchdog(values["WATCHDOG_USEC"], values["WATCHDOG_PID"])
        self._notifier: Optional[_NotifySocket] = None
        self._failures = 0
        self._ready_sent = False
        if self._socket_path is not None:
            try:
                self._notifier = _NotifySocket(self._socket_path)
            except (OSError, ValueError) as error:
                log.warning("systemd notify socket %s unusable: %s", self._socket_path, error)
        if unset_environment:
            for name in _NOTIFY_VARIABLES:
                os.environ.pop(name, None)

    @property
    def enabled(self) -> bool:
        """True when messages go to systemd (the agent runs as a ``Type=notify`` service)."""
        return self._notifier is not None

    def watchdog_interval(self) -> Optional[float]:
        """Seconds systemd waits for a watchdog ping (``WatchdogSec=``), or None when not asked.

        None also when ``WATCHDOG_PID`` names another process or there is no notify socket.
        Ping at half this interval or more often.
        """
        return self._watchdog_interval if self.enabled else None

    def ready(self, status: Optional[str] = None) -> None:
        """Tell systemd start-up is complete (``READY=1``), with an optional status line."""
        self._ready_sent = True
        self._send("READY=1", status)

    def watchdog(self) -> None:
        """Ping the watchdog (``WATCHDOG=1``); call only while the agent is healthy.

        Nothing is sent before ``ready()``: an agent that has not yet connected is not
        healthy, and systemd arms the watchdog only once the service is ready.
        """
        if self._ready_sent:
            self._send("WATCHDOG=1")

    def stopping(self, status: Optional[str] = None) -> None:
        """Tell systemd the agent is shutting down (``STOPPING=1``)."""
        self._send("STOPPING=1", status)

    def status(self, text: str) -> None:
        """Set the one-line status ``systemctl status`` shows (``STATUS=...``)."""
        self._send(None, text)

    def extend_timeout(self, seconds: float) -> None:
        """Ask for ``seconds`` more before a start or stop timeout (``EXTEND_TIMEOUT_USEC``)."""
        self._send(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def _send(self, state: Optional[str], status: Optional[str] = None) -> None:
        if self._notifier is None:
            return
        lines = [state] if state else []
        if status is not None:
            lines.append("STATUS=" + " ".join(status.splitlines()))
        try:
            self._notifier.notify("\n".join(lines))
        except OSError as error:
            self._failures += 1
            # Once at warning level, then quietly: a gone socket would otherwise flood the log.
            level = logging.WARNING if self._failures == 1 else logging.DEBUG
            log.log(level, "systemd notify %r failed: %s", lines[0], error)


class _NotifySocket:
    """An AF_UNIX datagram socket connected to systemd's notify socket ``path``.

    Connecting at once, as sd_notify callers find out at start, makes a socket that is not
    there an error when the agent starts. Raises OSError or ValueError (a malformed path).
    """

    def __init__(self, path: str) -> None:
        if path.startswith("@"):
            address = "\0" + path[1:]  # abstract namespace
        elif path.startswith("/"):
            address = path
        else:
            raise ValueError(f"NOTIFY_SOCKET={path!r} is neither a path nor @abstract")
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._socket.connect(address)
        except OSError:
            self._socket.close()
            raise

    def notify(self, message: str) -> None:
        """Send ``message`` as one datagram; raises OSError when it cannot be delivered."""
        self._socket.send(message.encode("utf-8"))


def _parse_watchdog(usec: Optional[str], pid: Optional[str]) -> Optional[float]:
    """Return the watchdog interval in seconds from ``WATCHDOG_USEC``/``WATCHDOG_PID``, or None."""
    if not usec:
        return None
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        microseconds = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number of microseconds", usec)
        return None
    if microseconds <= 0:
        return None
    return microseconds / 1_000_000
