"""While dpkg runs, the APT worker holds a logind shutdown delay lock (as unattended-upgrades
does), so a reboot waits for dpkg; without logind it goes on without one, saying so once.

logind is played by a small D-Bus service on a private bus (dbus-daemon with the session
configuration), which the worker reaches as its system bus."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import threading
import time
from typing import List

import pytest
from apt_helpers import JobThread, new_job, run_job

from agent.apt.inhibit import shutdown_delayed

pytest_plugins = ("apt_fixtures",)
pytestmark = pytest.mark.timeout(60)

# org.freedesktop.login1.Manager.Inhibit as logind answers it: a file descriptor whose closing
# releases the lock. Prints "inhibit WHAT WHO MODE" when taken and "released WHO" when closed.
# (apt >= 2.5 takes a "block" lock of its own while dpkg runs: "inhibit shutdown APT block".)
FAKE_LOGIND = r"""
import os, sys
import dbus, dbus.service, dbus.mainloop.glib
from gi.repository import GLib

dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
bus = dbus.bus.BusConnection(sys.argv[1])
name = dbus.service.BusName("org.freedesktop.login1", bus)


class Manager(dbus.service.Object):
    @dbus.service.method("org.freedesktop.login1.Manager", in_signature="ssss", out_signature="h")
    def Inhibit(self, what, who, why, mode):
        read, write = os.pipe()
        print("inhibit", what, who, mode, flush=True)

        def released(fd, condition):
            print("released", who, flush=True)
            os.close(fd)
            return False

        GLib.io_add_watch(read, GLib.IO_HUP | GLib.IO_IN, released)
        handle = dbus.types.UnixFd(write)
        os.close(write)
        return handle


manager = Manager(bus, "/org/freedesktop/login1")
print("ready", flush=True)
GLib.MainLoop().run()
"""


class FakeLogind:
    def __init__(self, bus_address: str) -> None:
        self.lines: List[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-c", FAKE_LOGIND, bus_address], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout.readline().strip() == "ready"
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.strip())

    def wait_for(self, line: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.lines:
            assert time.monotonic() < deadline, f"no {line!r}: {self.lines}"
            time.sleep(0.02)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.process.stdout.close()


@pytest.fixture
def fake_logind(monkeypatch):
    """logind on a private bus, which is the system bus of this process and its children."""
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed")
    pytest.importorskip("dbus")
    pytest.importorskip("gi")
    daemon = subprocess.Popen(
        ["dbus-daemon", "--config-file=/usr/share/dbus-1/session.conf", "--nofork",
         "--print-address"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # "Failed to set fd limit" where that is not allowed
        text=True,
    )
    address = daemon.stdout.readline().strip()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
    logind = FakeLogind(address)
    yield logind
    logind.stop()
    daemon.kill()
    daemon.wait()
    daemon.stdout.close()


def test_a_shutdown_delay_lock_is_held_while_dpkg_runs(apt_root, fake_logind):
    running = JobThread(apt_root, {"aptPackageName": "finishing"}, new_job())
    deadline = time.monotonic() + 30
    while not (apt_root.path / "finishing-started").exists():  # the 2 s postinst runs
        assert time.monotonic() < deadline, "dpkg did not run the postinst"
        time.sleep(0.02)

    assert "inhibit shutdown iot-jobs-agent delay" in fake_logind.lines
    assert "released iot-jobs-agent" not in fake_logind.lines
    details = running.result()

    assert details["result"] == "installed"
    fake_logind.wait_for("released iot-jobs-agent")


def test_the_lock_is_released_with_the_block(fake_logind):
    with shutdown_delayed("test") as held:
        assert held
        fake_logind.wait_for("inhibit shutdown iot-jobs-agent delay")
        assert "released iot-jobs-agent" not in fake_logind.lines

    fake_logind.wait_for("released iot-jobs-agent")


def test_without_logind_the_job_goes_on_and_says_so_once(apt_root, monkeypatch, caplog):
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/system_bus_socket")
    with caplog.at_level(logging.INFO, logger="job_client.handler"):
        details = run_job(apt_root, {"aptPackageName": "alpha"})

    assert details["result"] == "installed"
    said = [line for line in caplog.messages if "no shutdown inhibitor" in line]
    assert len(said) == 1, caplog.messages


def test_without_logind_a_repair_and_an_install_say_so_once(
    apt_root, apt_repository, monkeypatch, caplog
):
    apt_root.unpack(apt_repository.deb("gamma", "1.0"))  # the job repairs dpkg first
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/system_bus_socket")
    with caplog.at_level(logging.INFO, logger="job_client.handler"):
        details = run_job(apt_root, {"aptPackageName": "alpha"})

    assert details["dpkgRepaired"] == "true"
    assert len([line for line in caplog.messages if "no shutdown inhibitor" in line]) == 1
