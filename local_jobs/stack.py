"""The whole local AWS IoT Jobs setup in one object: certificates, broker, service, control plane.

Used by the end-to-end tests, bench/, the demo and ``./localjobs up``::

    with LocalStack(directory, things=["thing-1"], minute_seconds=1.0) as stack:
        stack.thing("thing-1").settings_path      # a ready agent settings file
        stack.iot_client().create_job(...)

Layout of ``directory``::

    certs.d/            CA, server, service and per-thing certificates (certificates.py)
    broker.d/           mosquitto.conf, acl, mosquitto.log
    service.d/          jobs.sqlite3, service.log
    documents.d/        where a relative CreateJob documentSource is looked up
    <thing>/            settings.conf and state/ for the agent of each thing

The internal folder names hold a dot, which a thing name cannot, so they never collide.
"""

from __future__ import annotations

import atexit
import configparser
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from local_jobs.broker import Broker, PortHold
from local_jobs.certificates import CertificateSet, check_thing_name, ensure_certificates
from local_jobs.model import thing_arn
from local_jobs.processes import child_preexec
from local_jobs.s3 import S3Server

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
_live_stacks: weakref.WeakSet[LocalStack] = weakref.WeakSet()


def edit_settings(
    path: Path, change: Callable[[configparser.ConfigParser], None], header: str
) -> None:
    """Let ``change`` edit the agent settings file at ``path`` (empty if missing; every key
    it does not touch is kept), then replace the file whole: written beside it and renamed,
    under the comment line ``header`` (which says who wrote it)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    change(parser)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as stream:
        stream.write(f"# {header}\n")
        parser.write(stream)
    os.replace(tmp, path)


class StackError(Exception):
    """A part of the local stack did not start or stopped unexpectedly."""


@dataclass(frozen=True)
class ThingCredentials:
    """What an agent for one thing needs; ``settings_path`` is a complete agent settings file."""

    name: str
    certificate: Path
    private_key: Path
    settings_path: Path
    arn: str


def _stop_live_stacks() -> None:
    for stack in list(_live_stacks):
        try:
            stack.stop()
        except Exception:  # at exit, keep stopping the others
            log.exception("could not stop local stack in %s", stack.directory)


atexit.register(_stop_live_stacks)


class LocalStack:
    """Certificates, mosquitto and the Jobs service (with its control plane) for ``things``.

    Ports are chosen once, at construction, and kept across restarts of either process.
    ``minute_seconds`` is how long a service "minute" lasts (step and in-progress timeouts).
    """

    def __init__(
        self,
        directory: os.PathLike,
        things: Sequence[str] = ("thing-1",),
        minute_seconds: float = 60.0,
        *,
        mqtt_port: Optional[int] = None,
        control_port: Optional[int] = None,
        jobs_data_port: Optional[int] = None,
        s3: bool = False,
        s3_port: Optional[int] = None,
        requests_per_second: Optional[float] = None,
        log_level: str = "INFO",
    ):
        self.directory = Path(directory).resolve()
        self.minute_seconds = float(minute_seconds)
        self.requests_per_second = requests_per_second
        self.log_level = log_level
        self._things: List[str] = []
        for name in things:
            check_thing_name(name)
            if name not in self._things:
                self._things.append(name)
        self.mqtt_host = "127.0.0.1"
        # Both ports stay this stack's from here to stop(): restarts find them free.
        self._port_holds: Dict[int, PortHold] = {}
        self.mqtt_port = mqtt_port or self._hold_port(0)
        self.control_port = control_port or self._hold_port(0)
        self.control_url = f"http://127.0.0.1:{self.control_port}"
        # The HTTPS device API (iot-jobs-data): its certificate names localhost.
        self.jobs_data_port = jobs_data_port or self._hold_port(0)
        self.jobs_data_url = f"https://localhost:{self.jobs_data_port}"
        # The local S3 (moto, s3.py) for S3 documentSource and presigned URLs: only when asked.
        self.s3_port = (s3_port or self._hold_port(0)) if s3 else None
        self.s3_url = f"https://localhost:{self.s3_port}" if s3 else None
        self._s3: Optional[S3Server] = None
        self.certs_dir = self.directory / "certs.d"
        self.broker_dir = self.directory / "broker.d"
        self.service_dir = self.directory / "service.d"
        self.documents_dir = self.directory / "documents.d"
        self.db_path = self.service_dir / "jobs.sqlite3"
        self.service_log = self.service_dir / "service.log"
        self._ready_file = self.service_dir / "ready"
        self._certs: Optional[CertificateSet] = None
        self._broker: Optional[Broker] = None
        self._service: Optional[subprocess.Popen] = None

    # lifecycle

    def start(self, timeout: float = 20.0) -> LocalStack:
        """Make missing certificates and settings, start broker and service, wait until ready.

        Raises StackError (or BrokerError) when a part does not come up within ``timeout``.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self.documents_dir.mkdir(exist_ok=True)
        for port in (self.mqtt_port, self.control_port, self.jobs_data_port, self.s3_port):
            if port is None:
                continue
            self._hold_port(port)
        self._certs = ensure_certificates(self.certs_dir, self._things)
        for name in self._things:
            self._write_settings(name)
        self._broker = Broker(self.broker_dir, self._certs, self.mqtt_port)
        _live_stacks.add(self)
        if self.s3_port is not None:
            self._s3 = S3Server(
                self.s3_port,
                self._certs.server.certificate,
                self._certs.server.private_key,
                self.directory / "s3.d" / "moto.log",
            )
        try:
            self.start_broker(timeout)
            if self._s3 is not None:
                self._s3.start(timeout)
            self.start_service(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the service, then the broker; safe to call twice."""
        self.kill_service(graceful=True)
        if self._s3 is not None:
            self._s3.stop()
        if self._broker is not None:
            self._broker.stop()
        for hold in self._port_holds.values():
            hold.release()
        self._port_holds.clear()
        _live_stacks.discard(self)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # endpoints

    @property
    def ca_path(self) -> Path:
        return self.certs_dir / "ca.crt"

    @property
    def certificates(self) -> CertificateSet:
        if self._certs is None:
            raise StackError("the stack is not started")
        return self._certs

    @property
    def things(self) -> List[str]:
        return list(self._things)

    def thing(self, name: str) -> ThingCredentials:
        """Credentials and settings of a thing of this stack; KeyError for an unknown one."""
        if name not in self._things:
            raise KeyError(f"no thing {name!r} in this stack (things: {', '.join(self._things)})")
        pair = self.certificates.thing(name)
        return ThingCredentials(
            name=name,
            certificate=pair.certificate,
            private_key=pair.private_key,
            settings_path=self.directory / name / "settings.conf",
            arn=thing_arn(name),
        )

    def add_thing(self, name: str) -> ThingCredentials:
        """A new thing: certificate and settings file. The ACL is pattern-based: no restart."""
        check_thing_name(name)
        if name not in self._things:
            self._things.append(name)
        self._certs = ensure_certificates(self.certs_dir, [name])
        self._write_settings(name)
        return self.thing(name)

    def endpoints(self) -> Dict[str, object]:
        """What ``endpoints.json`` holds: MQTT, control plane, CA, and per-thing paths."""
        return {
            "mqtt_host": "localhost",
            "mqtt_port": self.mqtt_port,
            "control_url": self.control_url,
            "jobs_data_url": self.jobs_data_url,
            **({"s3_url": self.s3_url} if self.s3_url else {}),
            "ca_path": str(self.ca_path),
            "minute_seconds": self.minute_seconds,
            "things": {
                name: {
                    "arn": creds.arn,
                    "certificate": str(creds.certificate),
                    "private_key": str(creds.private_key),
                    "settings_path": str(creds.settings_path),
                }
                for name, creds in ((n, self.thing(n)) for n in self._things)
            },
        }

    def iot_client(self):
        """A boto3 'iot' client for the control plane (any credentials are accepted)."""
        import boto3

        return boto3.client(
            "iot",
            endpoint_url=self.control_url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - dummy credentials of a local service
        )

    def jobs_data_client(self, thing_name: str):
        """A boto3 'iot-jobs-data' client speaking HTTPS as ``thing_name`` (its certificate)."""
        import boto3
        from botocore.config import Config

        creds = self.thing(thing_name)
        return boto3.client(
            "iot-jobs-data",
            endpoint_url=self.jobs_data_url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - dummy credentials of a local service
            verify=str(self.ca_path),
            config=Config(client_cert=(str(creds.certificate), str(creds.private_key))),
        )

    # broker

    def start_broker(self, timeout: float = 10.0) -> None:
        if self._broker is None:
            raise StackError("the stack is not started")
        self._broker.start(timeout)

    def kill_broker(self) -> None:
        if self._broker is not None:
            self._broker.kill()

    def restart_broker(self, timeout: float = 10.0) -> None:
        """Kill and restart mosquitto on the same port; wait until the service resubscribed."""
        count = self._ready_count()
        self.kill_broker()
        self.start_broker(timeout)
        if self.service_running:
            self._wait_ready(count, timeout)

    @property
    def s3_running(self) -> bool:
        """True when no local S3 was asked for, or it runs."""
        return self._s3 is None or self._s3.running

    def start_s3(self, timeout: float = 20.0) -> None:
        if self._s3 is not None:
            self._s3.start(timeout)

    def s3_client(self):
        """A boto3 's3' client for the local S3 (path-style, trusting the local CA)."""
        import boto3
        from botocore.config import Config

        if self.s3_url is None:
            raise StackError("this stack runs without a local S3 (LocalStack(s3=True))")
        return boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - dummy credentials of a local service
            verify=str(self.ca_path),
            config=Config(s3={"addressing_style": "path"}),
        )

    @property
    def broker_running(self) -> bool:
        return self._broker is not None and self._broker.running

    # service

    @property
    def service_running(self) -> bool:
        return self._service is not None and self._service.poll() is None

    def start_service(self, timeout: float = 20.0) -> None:
        """Start the service process; wait until it subscribed and its control port answers."""
        if self.service_running:
            return
        self.service_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._ready_file.unlink()
        except FileNotFoundError:
            pass
        command = [
            sys.executable,
            "-m",
            "local_jobs.server",
            "--db", str(self.db_path),
            "--mqtt-host", self.mqtt_host,
            "--mqtt-port", str(self.mqtt_port),
            "--certs", str(self.certs_dir),
            "--control-port", str(self.control_port),
            "--jobs-data-port", str(self.jobs_data_port),
            *(["--s3-url", self.s3_url] if self.s3_url else []),
            "--minute-seconds", repr(self.minute_seconds),
            "--ready-file", str(self._ready_file),
            "--documents-dir", str(self.documents_dir),
            "--log-file", str(self.service_log),
            "--log-level", self.log_level,
        ]  # fmt: skip
        if self.requests_per_second:
            command += ["--requests-per-second", repr(self.requests_per_second)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        stderr_path = self.service_dir / "service.stderr"
        with open(stderr_path, "ab") as stderr:
            self._service = subprocess.Popen(
                command,
                cwd=str(REPO_ROOT),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                preexec_fn=child_preexec,  # noqa: PLW1509 - only calls prctl, see processes.py
            )
        log.info("started local Jobs service pid %s", self._service.pid)
        self._wait_ready(0, timeout)
        if self._control_plane_expected():
            self._wait_port(self.control_port, timeout)

    def kill_service(self, graceful: bool = False) -> None:
        """Stop the service process: SIGKILL, or SIGTERM first when ``graceful``."""
        process, self._service = self._service, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.info("local Jobs service pid %s stopped (status %s)", process.pid, process.returncode)

    def restart_service(self, timeout: float = 20.0) -> None:
        """Kill the service process (no goodbye) and start it again on the same ports."""
        self.kill_service()
        self.start_service(timeout)

    # helpers

    def _hold_port(self, port: int) -> int:
        """Hold ``port`` (0: a free one) unless held already; a port given by the caller that
        something else listens on is left unheld (its server then reports it). Returns it."""
        if port in self._port_holds:
            return port
        try:
            hold = PortHold(port)
        except OSError as error:
            if not port:
                raise
            log.info("port %d is in use (%s); not holding it", port, error)
            return port
        self._port_holds[hold.port] = hold
        return hold.port

    def _control_plane_expected(self) -> bool:
        return (REPO_ROOT / "local_jobs" / "control_plane.py").exists()

    def _ready_count(self) -> int:
        try:
            return int(self._ready_file.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _wait_ready(self, above: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._ready_count() <= above:
            if self._service is None or self._service.poll() is not None:
                raise StackError(
                    f"the local Jobs service exited; see {self.service_log} and "
                    f"{self.service_dir / 'service.stderr'}"
                )
            if time.monotonic() > deadline:
                raise StackError(f"the local Jobs service was not ready in {timeout}s")
            time.sleep(0.02)

    def _wait_port(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    return
            except OSError:
                pass
            if self._service is None or self._service.poll() is not None:
                raise StackError(f"the local Jobs service exited; see {self.service_log}")
            if time.monotonic() > deadline:
                raise StackError(f"the control plane did not listen on {port} in {timeout}s")
            time.sleep(0.02)

    def _write_settings(self, name: str) -> None:
        """Write ``<thing>/settings.conf``; an existing file keeps its other sections."""
        pair = self.certificates.thing(name) if self._certs else None
        folder = self.directory / name
        folder.mkdir(parents=True, exist_ok=True)
        connection = {
            "endpoint": "localhost",
            "port": str(self.mqtt_port),
            "thing_name": name,
            "client_id": name,
            "root_ca": str(self.ca_path),
            "certificate": str(pair.certificate) if pair else "",
            "private_key": str(pair.private_key) if pair else "",
        }

        def change(parser: configparser.ConfigParser) -> None:
            for section in ("connection", "agent"):
                if not parser.has_section(section):
                    parser.add_section(section)
            for key, value in connection.items():
                parser.set("connection", key, value)
            if not parser.has_option("agent", "state_dir"):
                parser.set("agent", "state_dir", str(folder / "state"))

        edit_settings(
            folder / "settings.conf",
            change,
            "Written by local_jobs.stack for the local AWS IoT Jobs service.",
        )
