"""Mosquitto configured like AWS IoT Core: mutual TLS, the certificate CN as identity, an ACL.

``Broker`` writes ``mosquitto.conf`` and ``acl`` into a folder and runs ``mosquitto -c`` as a
child process on a loopback port that stays the same across restarts.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Optional

from local_jobs.certificates import SERVICE_IDENTITY, CertificateSet
from local_jobs.processes import child_preexec

log = logging.getLogger(__name__)

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


class BrokerError(Exception):
    """Mosquitto cannot be found, configured or started."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class PortHold:
    """Keeps a TCP port of ``host`` for one owner while its servers come and go.

    A socket bound to the port with SO_REUSEADDR that never listens: the kernel hands that
    port to no other bind(0) or connect(), while a server that sets SO_REUSEADDR too
    (mosquitto, http.server) still binds and listens on it. Without it, a port from the
    ephemeral range is anyone's between killing a broker or service and starting it again on
    the same port (another test's server took one in that second).
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        """Hold ``port`` (0: a free one). Raises OSError when something listens on it."""
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host, port))
        except OSError:
            self._socket.close()
            raise
        self.port: int = self._socket.getsockname()[1]

    def release(self) -> None:
        """Let the port go; safe to call twice."""
        self._socket.close()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when ``port`` can be bound on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def find_mosquitto() -> str:
    """Path of the ``mosquitto`` executable; raises BrokerError when it is not installed."""
    for candidate in MOSQUITTO_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise BrokerError("mosquitto not found: install the Debian package 'mosquitto'")


def acl_text() -> str:
    """The ACL: each thing may publish only its own request topics and read its own jobs topics.

    A thing cannot publish ``/accepted``, ``/rejected``, ``notify`` or ``notify-next`` messages,
    so it cannot fake the service's replies, and cannot touch another thing's topics.
    """
    return "\n".join(
        [
            "# Written by local_jobs.broker: the Jobs service identity uses every thing's topics.",
            f"user {SERVICE_IDENTITY}",
            "topic readwrite $aws/things/#",
            "",
            "# Every other client is a thing whose certificate CN is its name (%u).",
            "pattern write $aws/things/%u/jobs/get",
            "pattern write $aws/things/%u/jobs/start-next",
            "pattern write $aws/things/%u/jobs/+/get",
            "pattern write $aws/things/%u/jobs/+/update",
            # Job namespaces (namespace-NS after the job id), as the Greengrass nucleus uses.
            "pattern write $aws/things/%u/jobs/+/+/get",
            "pattern write $aws/things/%u/jobs/+/+/update",
            "pattern read $aws/things/%u/jobs/#",
            "",
        ]
    )


def config_text(certs: CertificateSet, port: int, acl_path: Path, log_path: Path) -> str:
    """mosquitto.conf for a TLS-only loopback listener requiring client certificates."""
    lines = [
        "# Written by local_jobs.broker: Mosquitto configured like AWS IoT Core.",
        "per_listener_settings false",
        "persistence false",
        # Nagle's algorithm with the peer's delayed ACK holds each small reply up to ~40 ms on
        # loopback; AWS IoT Core does not add such a delay (global option in mosquitto 2.0).
        "set_tcp_nodelay true",
        "allow_anonymous false",
        f"acl_file {acl_path}",
        f"log_dest file {log_path}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp true",
        f"listener {port} 127.0.0.1",
        f"cafile {certs.ca.certificate}",
        f"certfile {certs.server.certificate}",
        f"keyfile {certs.server.private_key}",
        "require_certificate true",
        "use_identity_as_username true",
        "tls_version tlsv1.2",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Started as root, mosquitto drops to user "mosquitto", which cannot read our 0600 keys.
        lines.insert(1, "user root")
    return "\n".join(lines) + "\n"


class Broker:
    """One mosquitto process for ``certs`` in ``folder``; ``port`` is kept across restarts."""

    def __init__(self, folder: os.PathLike, certs: CertificateSet, port: Optional[int] = None):
        self.folder = Path(folder)
        self.certs = certs
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.config_path = self.folder / "mosquitto.conf"
        self.acl_path = self.folder / "acl"
        self.log_path = self.folder / "mosquitto.log"
        self._process: Optional[subprocess.Popen] = None

    def write_config(self) -> None:
        """Write mosquitto.conf and the ACL file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.acl_path.write_text(acl_text())
        self.config_path.write_text(
            config_text(self.certs, self.port, self.acl_path, self.log_path)
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto and wait until its port completes a TLS handshake.

        Raises BrokerError when it exits or does not answer within ``timeout`` seconds.
        """
        if self.running:
            return
        self.write_config()
        executable = find_mosquitto()
        deadline = time.monotonic() + timeout
        # A port just released by a killed broker may linger briefly; wait for it.
        while not port_is_free(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        stderr_path = self.folder / "mosquitto.stderr"
        with open(stderr_path, "ab") as stderr:
            self._process = subprocess.Popen(
                [executable, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                preexec_fn=child_preexec,  # noqa: PLW1509 - only calls prctl, see processes.py
            )
        log.info("started mosquitto pid %s on 127.0.0.1:%s", self._process.pid, self.port)
        while True:
            if self._process.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited with status {self._process.returncode}; see "
                    f"{stderr_path} and {self.log_path}"
                )
            if self._tls_ready():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerError(f"mosquitto did not accept TLS on port {self.port} in {timeout}s")
            time.sleep(0.02)

    def _tls_ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.certs.ca.certificate))
        context.load_cert_chain(
            str(self.certs.service.certificate), str(self.certs.service.private_key)
        )
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as raw:
                with context.wrap_socket(raw, server_hostname="localhost"):
                    return True
        except (OSError, ssl.SSLError):
            return False

    def kill(self) -> None:
        """Stop mosquitto at once (SIGKILL) and reap it."""
        self._stop(signal.SIGKILL)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop mosquitto with SIGTERM, then SIGKILL after ``timeout`` seconds."""
        self._stop(signal.SIGTERM, timeout)

    def _stop(self, sig: int, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.info("mosquitto pid %s stopped (status %s)", process.pid, process.returncode)

    def restart(self) -> None:
        """Kill and start again on the same port."""
        self.kill()
        self.start()
