"""examples/iot-policy.json grants exactly the MQTT topics the agent's JobClient uses.

The JobClient runs against a client that only records what it is asked to do (the question
is which topics, not how MQTT behaves), for a thing named as AWS IoT's policy variable would.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import List, Tuple

import pytest
from start_sh_fixtures import REPO_ROOT

from job_client import JobClient

POLICY = REPO_ROOT / "examples" / "iot-policy.json"
THING = "my-device"
ARN_PREFIX = "arn:aws:iot:REGION:ACCOUNT:"


class RecordingMqttClient:
    """Accepts connect/subscribe/publish and records the topics; no network."""

    def __init__(self) -> None:
        self.subscribed: List[str] = []
        self.published: List[Tuple[str, str]] = []
        self.onOnline = None
        self.onOffline = None
        self.published_event = threading.Event()

    def connect(self, keepalive: int = 60) -> bool:
        if self.onOnline is not None:
            self.onOnline()
        return True

    def subscribe(self, topic: str, qos: int, callback) -> bool:
        self.subscribed.append(topic)
        return True

    def publishAsync(self, topic: str, payload: str, qos: int, ackCallback=None) -> int:  # noqa: N802
        self.published.append((topic, payload))
        self.published_event.set()
        return 1

    def disconnect(self) -> bool:
        return True


def resources(action: str, kind: str) -> List[str]:
    """The policy's resources for ``action`` of ``kind`` (topic, topicfilter, client), for THING."""
    policy = json.loads(POLICY.read_text())
    found = []
    for statement in policy["Statement"]:
        if statement["Action"] != action:
            continue
        listed = statement["Resource"]
        for resource in [listed] if isinstance(listed, str) else listed:
            assert resource.startswith(ARN_PREFIX + kind + "/"), resource
            name = resource[len(ARN_PREFIX + kind + "/") :]
            found.append(name.replace("${iot:Connection.Thing.ThingName}", THING))
    return found


def policy_matches(pattern: str, topic: str) -> bool:
    """An IoT policy resource match: ``*`` any characters, everything else literal."""
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), topic) is not None


@pytest.fixture(scope="module")
def session() -> RecordingMqttClient:
    """One JobClient start, first claim and stop, recorded."""
    mqtt = RecordingMqttClient()
    client = JobClient(mqtt, THING, request_timeout_seconds=0.5)
    client.start()
    try:
        assert mqtt.published_event.wait(10), "the client published nothing"
        time.sleep(0.2)
    finally:
        client.stop()
    return mqtt


def test_policy_subscribe_resources_are_exactly_the_agents_subscriptions(session):
    assert sorted(set(session.subscribed)) == sorted(
        resources("iot:Subscribe", "topicfilter")
    )


def test_policy_receive_resources_cover_each_subscription_and_nothing_else(session):
    receive = resources("iot:Receive", "topic")
    subscribed = set(session.subscribed)
    assert len(receive) == len(subscribed)
    for topic_filter in subscribed:
        example_topic = topic_filter.replace("+", "job-1")
        assert any(policy_matches(pattern, example_topic) for pattern in receive), topic_filter


def test_policy_publish_resources_cover_start_next_and_job_updates(session):
    publish = resources("iot:Publish", "topic")
    for topic, _ in session.published:
        assert any(policy_matches(pattern, topic) for pattern in publish), topic
    assert any(policy_matches(p, f"$aws/things/{THING}/jobs/job-1/update") for p in publish)
    assert not any(policy_matches(p, "$aws/things/other-device/jobs/start-next") for p in publish)


def test_policy_lets_the_client_connect_only_as_its_thing_name():
    assert resources("iot:Connect", "client") == [THING]
