"""What every measurement of one harness run shares: options, a work folder, one local stack.

The stack (broker + local Jobs service, ``local_jobs.stack.LocalStack``) is started on first
use and stopped at the end of the run, so that a ``--only`` run starts only what it needs.
Baselines are computed once per run and shared by every row that compares against them.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from typing import Any, Callable, Dict, Optional, TypeVar

from bench.sdk import Connection

log = logging.getLogger(__name__)

T = TypeVar("T")


def privileged_connection(stack: Any) -> Connection:
    """The Jobs service's own identity: the only one the broker lets use every thing's topics."""
    service = stack.certificates.service
    return Connection(host="localhost", port=stack.mqtt_port, thing_name="local-jobs-service",
                      root_ca=str(stack.ca_path), certificate=str(service.certificate),
                      private_key=str(service.private_key))


class BenchContext:
    """Options, a scratch folder, the lazily started local stack and the cached baselines."""

    def __init__(self, *, quick: bool, runs: Optional[int] = None, keep: bool = False) -> None:
        self.quick = quick
        self.runs = runs if runs is not None else (3 if quick else 5)
        self.keep = keep
        self.directory = tempfile.mkdtemp(prefix="bench-")
        self._stack: Any = None
        self._cache: Dict[str, Any] = {}

    def size(self, quick: T, full: T) -> T:
        """``quick`` under ``--quick``, else ``full``."""
        return quick if self.quick else full

    @property
    def stack(self) -> Any:
        """The local broker + Jobs service for this run (started on first use)."""
        if self._stack is None:
            from local_jobs.stack import LocalStack

            log.info("starting the local stack in %s", self.directory)
            stack = LocalStack(f"{self.directory}/stack", things=[], minute_seconds=60.0)
            stack.start()
            self._stack = stack
        return self._stack

    @property
    def iot(self) -> Any:
        """One boto3 'iot' client on the stack's control plane (making one takes ~0.5 s)."""
        return self.cached("iot_client", self.stack.iot_client)

    def thing(self, name: str) -> Any:
        """Credentials (with a settings file) of thing ``name``, created on first use."""
        things = self._cache.setdefault("things", {})
        if name not in things:
            things[name] = self.stack.add_thing(name)
        return things[name]

    def privileged(self) -> Connection:
        """The Jobs service's own identity on this run's stack."""
        return privileged_connection(self.stack)

    def cached(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()`` once per run; later calls return the same value (a shared baseline)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def remember(self, key: str, value: Any) -> None:
        """Keep a figure for a later measurement of this run (e.g. the idle RSS)."""
        self._cache[key] = value

    def recall(self, key: str, default: Any = None) -> Any:
        """A figure kept with ``remember``, or ``default``."""
        return self._cache.get(key, default)

    def close(self) -> None:
        """Stop the stack and remove the scratch folder (unless ``keep``)."""
        if self._stack is not None:
            self._stack.stop()
            self._stack = None
        if self.keep:
            log.info("kept the scratch folder %s", self.directory)
        else:
            shutil.rmtree(self.directory, ignore_errors=True)
