"""A logind shutdown inhibitor held while dpkg runs, as unattended-upgrades takes one.

A reboot or shutdown asked for while dpkg runs would otherwise stop the agent, and with it (at
the end of the shutdown) the dpkg it left running, halfway through a maintainer script. With a
``delay`` lock logind waits for dpkg to finish before it starts the shutdown, up to its
``InhibitDelayMaxSec`` (5 s by default: the Debian package raises it with a logind.conf.d
drop-in). A delay lock, not a block: a shutdown always happens, and the bound says when.

The lock is a file descriptor from logind's ``Inhibit`` call over the system bus
(python3-dbus): it is released when the worker closes it, or when the worker dies, so a killed
worker never leaves a stale lock. Where there is no python3-dbus, no system bus or no logind
(test roots, most containers), the worker says so in one line and goes on without it.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator, Optional

log = logging.getLogger("agent.apt.worker")

LOGIND = "org.freedesktop.login1"
LOGIND_PATH = "/org/freedesktop/login1"
WHO = "iot-jobs-agent"
_unavailable: list = []  # why there is no lock, once known (said once per worker)


@contextmanager
def shutdown_delayed(why: str) -> Iterator[bool]:
    """Hold a logind ``shutdown`` delay lock for the block; yields whether one is held."""
    descriptor = _take(why)
    try:
        yield descriptor is not None
    finally:
        if descriptor is not None:
            os.close(descriptor)


def _take(why: str) -> Optional[int]:
    if _unavailable:
        return None
    try:
        import dbus  # python3-dbus, imported only when dpkg is about to run
    except ImportError:
        return _without("python3-dbus is not installed")
    try:
        manager = dbus.Interface(
            dbus.SystemBus().get_object(LOGIND, LOGIND_PATH), f"{LOGIND}.Manager"
        )
        descriptor = manager.Inhibit("shutdown", WHO, why, "delay")
        return int(descriptor.take())
    except dbus.exceptions.DBusException as error:
        return _without(f"logind not reachable: {error.get_dbus_name() or 'no system bus'}")


def _without(reason: str) -> None:
    _unavailable.append(reason)
    log.info("no shutdown inhibitor while dpkg runs (%s)", reason)
