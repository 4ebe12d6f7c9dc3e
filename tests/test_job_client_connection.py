"""The MQTT link (agent/mqtt.py JobsConnection): connect with jittered backoff, a failure
named once and then retried quietly, publish that says whether it worked. Against a stand-in
SDK client (pure logic); the real SDK against a real broker is in test_job_client_e2e.py."""

from __future__ import annotations

import logging
import threading

import pytest
from AWSIoTPythonSDK.exception.operationError import operationError

from agent.mqtt import QOS, JobsConnection, jittered


class FlakySdk:
    """Refuses ``failures`` connects (then connects), records subscriptions and publishes."""

    def __init__(self, failures=0):
        self.failures = failures
        self.error = OSError("[X509: KEY_VALUES_MISMATCH]")
        self.connects = 0
        self.subscribed = []
        self.published = []
        self.disconnects = 0
        self.publish_error = None

    def connect(self, keepalive):
        self.connects += 1
        if self.connects <= self.failures:
            raise self.error
        return True

    def subscribe(self, topic, qos, callback):
        self.subscribed.append((topic, qos))

    def publishAsync(self, topic, payload, qos):  # noqa: N802 - the SDK's name
        if self.publish_error is not None:
            raise self.publish_error
        self.published.append((topic, payload, qos))

    def disconnect(self):
        self.disconnects += 1


class NoWait(threading.Event):
    """A stop event whose waits return at once (the backoff is not slept in unit tests)."""

    def __init__(self):
        super().__init__()
        self.waits = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return self.is_set()


def test_connect_subscribes_every_topic_at_qos_1():
    sdk = FlakySdk()
    link = JobsConnection(sdk)
    assert link.connect(["a", "b"], lambda *a: None, NoWait())
    assert sdk.subscribed == [("a", QOS), ("b", QOS)]
    assert link.connected_once


def test_connect_failure_names_the_setting_once_then_retries_quietly(caplog):
    sdk = FlakySdk(failures=4)
    link = JobsConnection(sdk, explain_failure=lambda: "[connection] private_key: not the key")
    heard = []
    stop = NoWait()
    with caplog.at_level(logging.DEBUG, logger="agent.mqtt"):
        assert link.connect(["a"], lambda *a: None, stop, heard.append)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1
    assert "KEY_VALUES_MISMATCH" in errors[0]
    assert "[connection] private_key: not the key" in errors[0]
    assert sdk.connects == 5
    assert len(heard) == 4 and all("private_key" in why for why in heard)


def test_a_different_failure_is_named_again(caplog):
    sdk = FlakySdk(failures=3)
    link = JobsConnection(sdk)
    errors = iter([OSError("refused"), OSError("refused"), OSError("reset")])

    def connect(keepalive):
        sdk.connects += 1
        if sdk.connects <= 3:
            raise next(errors)

    sdk.connect = connect
    with caplog.at_level(logging.DEBUG, logger="agent.mqtt"):
        link.connect(["a"], lambda *a: None, NoWait())
    errors_logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [("refused" in m, "reset" in m) for m in errors_logged] == [(True, False), (False, True)]


def test_backoff_doubles_with_jitter_up_to_its_cap():
    sdk = FlakySdk(failures=10)
    stop = NoWait()
    JobsConnection(sdk).connect(["a"], lambda *a: None, stop)
    bases = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert len(stop.waits) == len(bases)
    for wait, base in zip(stop.waits, bases):
        assert base <= wait <= base * 1.5


def test_connect_gives_up_when_stopped():
    sdk = FlakySdk(failures=100)
    stop = NoWait()
    stop.set()
    assert not JobsConnection(sdk).connect(["a"], lambda *a: None, stop)


def test_jitter_spreads_a_fleet():
    delays = {round(jittered(10.0), 3) for _ in range(50)}
    assert len(delays) > 40
    assert all(10.0 <= delay <= 15.0 for delay in delays)


@pytest.mark.parametrize("error", [operationError("not connected"), OSError("gone")])
def test_publish_says_false_instead_of_raising(error):
    sdk = FlakySdk()
    link = JobsConnection(sdk)
    assert link.publish("t", "{}")
    sdk.publish_error = error
    assert not link.publish("t", "{}")
    assert sdk.published == [("t", "{}", QOS)]


def test_disconnect_failure_is_logged_not_raised(caplog):
    sdk = FlakySdk()

    def broken():
        raise OSError("already closed")

    sdk.disconnect = broken
    JobsConnection(sdk).disconnect()
    assert "disconnect failed: already closed" in caplog.text
