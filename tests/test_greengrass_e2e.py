"""The agent and a Greengrass nucleus stand-in on one thing, against the local broker and Jobs
service: the stand-in connects as the nucleus does (the thing name as client id, the thing's
certificate) and listens on the deployment namespace's topics; the agent, told it is on a core
device, connects with its own client id. Both keep their connections, the agent's jobs run,
and the broker's log shows each connection made once (no knock-each-other-offline loop).

The stand-in also gets and ends ``aws-gg-deployment`` jobs as the nucleus does; with jobs of
both namespaces queued in every order, each gets only its own."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from agent_core_fixtures import AgentProcess, create_job, wait_status
from paho.mqtt.enums import CallbackAPIVersion
from stack_helpers import set_settings

pytestmark = pytest.mark.timeout(90)

THING = "thing-1"
PREFIX = f"$aws/things/{THING}/jobs/"
DEPLOYMENT_FILTERS = [
    f"$aws/things/{THING}/jobs/notify-namespace-aws-gg-deployment",
    f"$aws/things/{THING}/jobs/notify-next-namespace-aws-gg-deployment",
    f"$aws/things/{THING}/jobs/$next/namespace-aws-gg-deployment/get/+",
    f"$aws/things/{THING}/jobs/+/namespace-aws-gg-deployment/update/+",
]


class NucleusStandIn:
    """An MQTT client with the thing name as client id, like the nucleus's first connection;
    counts how often it was disconnected."""

    def __init__(self, stack) -> None:
        creds = stack.thing(THING)
        self.disconnects = 0
        self.connected = threading.Event()
        self.finished: list = []  # deployment job ids it ended
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=THING, protocol=mqtt.MQTTv311
        )
        self.client.tls_set(
            ca_certs=str(stack.ca_path),
            certfile=str(creds.certificate),
            keyfile=str(creds.private_key),
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", stack.mqtt_port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        for topic_filter in DEPLOYMENT_FILTERS:
            client.subscribe(topic_filter, qos=1)
        self.connected.set()
        self.ask_next()

    def ask_next(self) -> None:
        """As the nucleus does on connect and on a notification: get the next deployment."""
        self.client.publish(PREFIX + "$next/namespace-aws-gg-deployment/get", "{}", qos=1)

    def _on_message(self, client, userdata, message) -> None:
        body = json.loads(message.payload or b"{}")
        if message.topic.endswith("/get/accepted"):
            execution = body.get("execution")
            if execution:  # deploy it: report SUCCEEDED in the deployment namespace
                topic = f"{PREFIX}{execution['jobId']}/namespace-aws-gg-deployment/update"
                client.publish(topic, json.dumps({"status": "SUCCEEDED"}), qos=1)
        elif message.topic.endswith("/update/accepted"):
            self.finished.append(message.topic[len(PREFIX) :].split("/", 1)[0])
            self.ask_next()
        elif "notify" in message.topic:
            self.ask_next()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.disconnects += 1
        self.connected.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def nucleus(stack):
    stand_in = NucleusStandIn(stack)
    assert stand_in.connected.wait(10), "the nucleus stand-in did not connect"
    yield stand_in
    stand_in.close()


def connections_as(log_text: str, client_id: str) -> int:
    """How often the broker logged a new connection with ``client_id``."""
    return sum(
        1
        for line in log_text.splitlines()
        if "New client connected" in line and f" as {client_id} " in line + " "
    )


def test_agent_and_nucleus_keep_their_own_connections_on_one_thing(stack, nucleus, tmp_path):
    settings = stack.thing(THING).settings_path
    # client_id: the stack wrote the thing name
    set_settings(settings, "connection", greengrass="yes", client_id="")
    agent = AgentProcess(settings, tmp_path / "agent.log", tmp_path / "runs")
    try:
        agent.wait_log("connected; listening for jobs")
        for number in range(3):
            create_job(stack, f"agent-{number}", {"jobType": "SLEEP", "seconds": 0.1})
        for number in range(3):
            assert wait_status(stack, f"agent-{number}")["status"] == "SUCCEEDED"
        time.sleep(1)  # room for a takeover, were there one
    finally:
        agent.close()
    log_text = stack.broker_dir.joinpath("mosquitto.log").read_text(errors="replace")
    assert nucleus.disconnects == 0 and nucleus.connected.is_set()
    assert connections_as(log_text, THING) == 1
    assert connections_as(log_text, f"{THING}-jobs-agent") == 1


def test_the_harness_sees_a_takeover_when_both_use_the_thing_name(stack, nucleus, tmp_path):
    # The control: told it is no core device, the agent keeps the stack's client id, the
    # thing name, and the broker drops the stand-in's connection as AWS IoT would.
    settings = stack.thing(THING).settings_path
    set_settings(settings, "connection", greengrass="no")
    agent = AgentProcess(settings, tmp_path / "agent.log", tmp_path / "runs")
    try:
        agent.wait_log("connected; listening for jobs")
        deadline = time.monotonic() + 10
        while nucleus.disconnects == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        agent.close()
    assert nucleus.disconnects >= 1


def create_deployment(stack, job_id: str) -> None:
    stack.iot_client().create_job(
        jobId=job_id,
        targets=[stack.thing(THING).arn],
        document=json.dumps({"components": {"com.example.Hello": {"componentVersion": "1.0.0"}}}),
        namespaceId="aws-gg-deployment",
    )


@pytest.mark.parametrize("order", ["agent job first", "deployment first", "both waiting"])
def test_each_gets_only_its_own_jobs_in_every_order(stack, nucleus, tmp_path, order):
    settings = stack.thing(THING).settings_path
    set_settings(settings, "connection", greengrass="yes", client_id="")
    agent = None
    try:
        if order != "both waiting":
            agent = AgentProcess(settings, tmp_path / "agent.log", tmp_path / "runs")
            agent.wait_log("connected; listening for jobs")
        first, second = (
            (("agent", "agent-1"), ("deploy", "deploy-1"))
            if order != "deployment first"
            else (("deploy", "deploy-1"), ("agent", "agent-1"))
        )
        for kind, job_id in (first, second):
            if kind == "agent":
                create_job(stack, job_id, {"jobType": "SLEEP", "seconds": 0.1})
            else:
                create_deployment(stack, job_id)
        if agent is None:
            nucleus.ask_next()
            agent = AgentProcess(settings, tmp_path / "agent.log", tmp_path / "runs")
        assert wait_status(stack, "agent-1", timeout=20)["status"] == "SUCCEEDED"
        deadline = time.monotonic() + 20
        while "deploy-1" not in nucleus.finished and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        if agent is not None:
            agent.close()
    assert nucleus.finished == ["deploy-1"]
    assert "deploy-1" not in agent.log_text()
    runs = (tmp_path / "runs").read_text().splitlines()
    assert [line.split()[0] for line in runs] == ["agent-1"]  # the handler ran for its own
    log_text = stack.broker_dir.joinpath("mosquitto.log").read_text(errors="replace")
    assert nucleus.disconnects == 0
    assert connections_as(log_text, THING) == 1
    assert connections_as(log_text, f"{THING}-jobs-agent") == 1
