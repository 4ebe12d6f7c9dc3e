"""Helpers for the systemd tests: a notify socket the test owns, as systemd's would be."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from typing import List, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NotifySocket:
    """An AF_UNIX datagram socket bound where ``NOTIFY_SOCKET`` points, recording every message.

    The path lives in a short temporary folder: socket paths are limited to 107 bytes.
    """

    def __init__(self) -> None:
        self._folder = tempfile.mkdtemp(prefix="notify-")
        self.path = os.path.join(self._folder, "notify.sock")
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self.path)
        self.messages: List[str] = []

    def receive(self, timeout: float) -> Optional[str]:
        """The next message, or None when none comes within ``timeout`` seconds."""
        self._socket.settimeout(max(timeout, 0.001))
        try:
            data = self._socket.recv(4096)
        except socket.timeout:
            return None
        message = data.decode()
        self.messages.append(message)
        return message

    def wait_for(self, line: str, timeout: float) -> List[str]:
        """Messages received until one holding ``line``; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            message = self.receive(deadline - time.monotonic())
            if message is not None:
                seen.append(message)
                if line in message.splitlines():
                    return seen
            elif time.monotonic() >= deadline:
                raise AssertionError(f"no {line!r} within {timeout}s; got {seen!r}")

    def drain(self) -> List[str]:
        """Messages already waiting, without blocking."""
        seen = []
        while True:
            message = self.receive(0.001)
            if message is None:
                return seen
            seen.append(message)

    def close(self) -> None:
        self._socket.close()
        shutil.rmtree(self._folder, ignore_errors=True)
