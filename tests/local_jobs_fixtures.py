"""Helpers for end-to-end tests against the local Jobs service: a raw MQTT device."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions
from stack_helpers import DOCUMENT, create_job  # noqa: F401 - the tests' one copy, re-exported

from local_jobs.stack import LocalStack

Message = Tuple[str, Any]


class RawDevice:
    """A thing speaking raw MQTT 5 to the local broker with its own certificate.

    Every message it receives is kept in order; ``noLocal`` keeps its own requests out.
    """

    def __init__(
        self,
        stack: LocalStack,
        thing_name: str,
        *,
        identity: Optional[Tuple[str, str]] = None,
        subscribe: Optional[List[str]] = None,
    ):
        self.thing_name = thing_name
        self.prefix = f"$aws/things/{thing_name}/jobs/"
        if identity is None:
            creds = stack.thing(thing_name)
            identity = (str(creds.certificate), str(creds.private_key))
        self.messages: queue.Queue[Message] = queue.Queue()
        self.seen: List[Message] = []
        self._subscribed = threading.Event()
        self.suback_codes: List[Any] = []
        self._filters = subscribe if subscribe is not None else [self.prefix + "#"]
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{thing_name}-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.tls_set(ca_certs=str(stack.ca_path), certfile=identity[0], keyfile=identity[1])
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *args: self._subscribed.clear()
        self.client.connect("localhost", stack.mqtt_port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError(f"device {thing_name} did not subscribe")

    def wait_subscribed(self, timeout: float = 15.0) -> None:
        """Wait until the device is (re)connected and (re)subscribed."""
        if not self._subscribed.wait(timeout):
            raise AssertionError(f"device {self.thing_name} not subscribed in {timeout}s")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not self._filters:
            self._subscribed.set()
            return
        client.subscribe([(f, SubscribeOptions(qos=1, noLocal=True)) for f in self._filters])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.suback_codes = list(reason_codes)
        self._subscribed.set()

    def _on_message(self, client, userdata, message):
        try:
            body = json.loads(message.payload) if message.payload else None
        except ValueError:
            body = message.payload
        self.messages.put((message.topic, body))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, suffix: str, body: Any = None, *, raw: Optional[bytes] = None) -> None:
        payload = raw if raw is not None else json.dumps(body if body is not None else {})
        info = self.client.publish(self.prefix + suffix, payload, qos=1)
        info.wait_for_publish(5)

    def request(self, suffix: str, body: Optional[Dict[str, Any]] = None, **kwargs) -> Message:
        """Publish a request with a fresh clientToken; return its reply (topic suffix, body)."""
        body = dict(body or {})
        token = body.setdefault("clientToken", uuid.uuid4().hex)
        self.publish(suffix, body, **kwargs)
        return self.wait_for(
            lambda t, b: (
                t in (f"{suffix}/accepted", f"{suffix}/rejected")
                and isinstance(b, dict)
                and b.get("clientToken") == token
            )
        )

    def wait_for(self, match, timeout: float = 5.0) -> Message:
        """The first received message (suffix, body) with ``match(suffix, body)``; others kept."""
        deadline = time.monotonic() + timeout
        for index, (suffix, body) in enumerate(self.seen):
            if match(suffix, body):
                return self.seen.pop(index)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching message in {timeout}s; saw {self.seen!r}")
            try:
                topic, body = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            suffix = topic[len(self.prefix) :] if topic.startswith(self.prefix) else topic
            if match(suffix, body):
                return suffix, body
            self.seen.append((suffix, body))

    def wait_topic(self, suffix: str, timeout: float = 5.0) -> Any:
        return self.wait_for(lambda t, b: t == suffix, timeout)[1]

    def drain(self, settle: float = 0.3) -> List[Message]:
        """Everything received until nothing arrives for ``settle`` seconds."""
        out = list(self.seen)
        self.seen.clear()
        while True:
            try:
                topic, body = self.messages.get(timeout=settle)
            except queue.Empty:
                return out
            suffix = topic[len(self.prefix) :] if topic.startswith(self.prefix) else topic
            out.append((suffix, body))


class SdkDevice:
    """A thing using AWSIoTPythonSDK's own ``AWSIoTMQTTThingJobsClient`` (AWS's serializers).

    Subscribes to every reply and notification topic; callbacks only enqueue (a synchronous
    SDK call inside an SDK callback deadlocks). ``received`` is filled like RawDevice's.
    """

    def __init__(self, stack: LocalStack, thing_name: str, client_token: str = "sdk-token"):
        from AWSIoTPythonSDK.core.jobs.thingJobManager import (
            jobExecutionTopicReplyType as reply,
        )
        from AWSIoTPythonSDK.core.jobs.thingJobManager import (
            jobExecutionTopicType as kind,
        )
        from AWSIoTPythonSDK.MQTTLib import AWSIoTMQTTClient, AWSIoTMQTTThingJobsClient

        creds = stack.thing(thing_name)
        self.prefix = f"$aws/things/{thing_name}/jobs/"
        self.messages: queue.Queue[Message] = queue.Queue()
        self.seen: List[Message] = []
        self.mqtt = AWSIoTMQTTClient(f"{thing_name}-sdk-{uuid.uuid4().hex[:6]}")
        self.mqtt.disableMetricsCollection()
        self.mqtt.configureEndpoint("localhost", stack.mqtt_port)
        self.mqtt.configureCredentials(
            str(stack.ca_path), str(creds.private_key), str(creds.certificate)
        )
        self.mqtt.configureConnectDisconnectTimeout(10)
        self.mqtt.configureMQTTOperationTimeout(5)
        self.mqtt.connect()
        self.jobs = AWSIoTMQTTThingJobsClient(
            client_token, thing_name, QoS=1, awsIoTMQTTClient=self.mqtt
        )
        for topic_type, job_id in (
            (kind.JOB_GET_PENDING_TOPIC, None),
            (kind.JOB_START_NEXT_TOPIC, None),
            (kind.JOB_DESCRIBE_TOPIC, "+"),
            (kind.JOB_UPDATE_TOPIC, "+"),
        ):
            for reply_type in (reply.JOB_ACCEPTED_REPLY_TYPE, reply.JOB_REJECTED_REPLY_TYPE):
                self.jobs.createJobSubscription(self._on_message, topic_type, reply_type, job_id)
        self.jobs.createJobSubscription(self._on_message, kind.JOB_NOTIFY_TOPIC)
        self.jobs.createJobSubscription(self._on_message, kind.JOB_NOTIFY_NEXT_TOPIC)

    def _on_message(self, client, userdata, message) -> None:
        self.messages.put((message.topic, json.loads(message.payload)))

    def close(self) -> None:
        self.mqtt.disconnect()

    wait_for = RawDevice.wait_for
    wait_topic = RawDevice.wait_topic
    drain = RawDevice.drain
