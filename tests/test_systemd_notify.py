"""agent/systemd_notify.py against a real AF_UNIX datagram socket, as systemd provides it."""

from __future__ import annotations

import os

import pytest
from systemd_fixtures import NotifySocket

from agent.systemd_notify import SystemdNotifier


@pytest.fixture
def notify_socket(monkeypatch):
    sock = NotifySocket()
    monkeypatch.setenv("NOTIFY_SOCKET", sock.path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()


def test_without_notify_socket_every_call_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    notifier = SystemdNotifier()
    notifier.ready("connected")
    notifier.watchdog()
    notifier.status("idle")
    notifier.stopping()
    assert not notifier.enabled
    assert notifier.watchdog_interval() is None


def test_ready_sends_ready_and_status(notify_socket):
    SystemdNotifier().ready("connected to localhost")
    assert notify_socket.receive(2) == "READY=1\nSTATUS=connected to localhost"


def test_watchdog_ping_is_sent_once_ready(notify_socket):
    notifier = SystemdNotifier()
    notifier.ready()
    notifier.watchdog()
    assert [notify_socket.receive(2), notify_socket.receive(2)] == ["READY=1", "WATCHDOG=1"]


def test_no_watchdog_ping_before_ready(notify_socket):
    notifier = SystemdNotifier()
    notifier.watchdog()
    notifier.status("connecting")
    assert notify_socket.receive(2) == "STATUS=connecting"


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda n: n.stopping(), "STOPPING=1"),
        (lambda n: n.status("job j-1: installing\nnginx"), "STATUS=job j-1: installing nginx"),
        (lambda n: n.extend_timeout(90), "EXTEND_TIMEOUT_USEC=90000000"),
    ],
)
def test_each_call_sends_its_message(notify_socket, call, expected):
    call(SystemdNotifier())
    assert notify_socket.receive(2) == expected


def test_notify_variables_are_removed_from_the_environment_for_child_processes(notify_socket):
    os.environ["WATCHDOG_USEC"] = "20000000"
    os.environ["WATCHDOG_PID"] = str(os.getpid())
    notifier = SystemdNotifier()
    assert notifier.enabled
    assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & set(os.environ)


def test_environment_is_kept_when_asked(notify_socket):
    SystemdNotifier(unset_environment=False)
    assert os.environ["NOTIFY_SOCKET"] == notify_socket.path


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", "self", 30.0),
        ("30000000", None, 30.0),
        ("500000", "self", 0.5),
        ("30000000", "1", None),
        ("0", "self", None),
        ("soon", "self", None),
        (None, None, None),
    ],
)
def test_watchdog_interval_comes_from_watchdog_usec_for_this_process(
    notify_socket, monkeypatch, usec, pid, expected
):
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)
    assert SystemdNotifier().watchdog_interval() == expected


def test_unreachable_socket_is_logged_and_ignored(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "no-such.sock"))
    notifier = SystemdNotifier()
    notifier.ready()
    assert not notifier.enabled
    assert "no-such.sock unusable" in caplog.text


def test_socket_gone_after_start_is_logged_once_as_warning(notify_socket, caplog):
    notifier = SystemdNotifier()
    notifier.ready()
    notify_socket.close()
    notifier.watchdog()
    notifier.watchdog()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "WATCHDOG=1" in warnings[0].getMessage()
