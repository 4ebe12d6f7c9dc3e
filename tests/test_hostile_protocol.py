"""Malformed and unexpected service messages on the device's own topics, published with the
privileged service identity (the only one the broker lets publish there): garbage, wrong types,
replies to requests never sent, for other jobs, with stale versions, and malformed replies that
do carry the token of a request the agent is waiting for. The agent logs and ignores or handles
each, never crashes, runs no job twice and still runs the next real job.

Real broker, real local Jobs service, the real JobClient with the real SDK client.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from agent_core_fixtures import InProcessAgent, Recorder, create_job, wait_for, wait_status
from local_jobs_fixtures import RawDevice
from resilience_fixtures import wait_all_terminal

pytest_plugins = ("resilience_fixtures",)
pytestmark = pytest.mark.timeout(60)

EXECUTION = {"jobId": "ghost-1", "status": "QUEUED", "executionNumber": 1, "versionNumber": 1}
GARBAGE = [
    ("notify-next", b"not json at all"),
    ("notify-next", b"\xff\xfe\x00garbage"),
    ("notify-next", b""),
    ("notify-next", b"[1, 2, 3]"),
    ("notify-next", b'"a string"'),
    ("notify-next", b"null"),
    ("notify-next", json.dumps({"execution": "not an object"}).encode()),
    ("notify-next", json.dumps({"execution": {"jobId": 5, "executionNumber": "x"}}).encode()),
    ("notify-next", json.dumps({"execution": {**EXECUTION, "jobDocument": "x" * 40000}}).encode()),
    ("start-next/accepted", json.dumps({"execution": {**EXECUTION, "jobDocument": {}}}).encode()),
    ("start-next/accepted", json.dumps({"clientToken": "forged", "execution": []}).encode()),
    ("start-next/accepted", json.dumps({"clientToken": None, "execution": None}).encode()),
    (
        "start-next/rejected",
        json.dumps({"clientToken": "forged", "code": "InternalError"}).encode(),
    ),
    ("start-next/rejected", json.dumps({"code": 5, "message": {"a": 1}}).encode()),
    ("ghost-1/update/accepted", json.dumps({"clientToken": "forged"}).encode()),
    ("ghost-1/update/rejected", json.dumps({"code": "VersionMismatch"}).encode()),
    ("ghost-1/get/accepted", json.dumps({"execution": EXECUTION}).encode()),
    ("$next/get/accepted", json.dumps({"clientToken": "x", "execution": EXECUTION}).encode()),
    ("get/accepted", json.dumps({"inProgressJobs": "x", "queuedJobs": [EXECUTION]}).encode()),
    ("a/b/c/d/e", b"{}"),
]


def garbage_for(job_id: str):
    """The table, plus stale replies and wrong-job replies about ``job_id`` (the real one)."""
    stale = {"status": "SUCCEEDED", "versionNumber": 1, "statusDetails": {"forged": "yes"}}
    return GARBAGE + [
        (f"{job_id}/update/accepted", json.dumps({"executionState": stale}).encode()),
        (
            f"{job_id}/update/rejected",
            json.dumps(
                {"clientToken": uuid.uuid4().hex, "code": "TerminalStateReached",
                 "executionState": {"status": "CANCELED", "versionNumber": 99}}
            ).encode(),
        ),
        (
            f"{job_id}/update/rejected",
            json.dumps({"code": "VersionMismatch",
                        "executionState": {"versionNumber": 1}}).encode(),
        ),
        ("notify-next", json.dumps({"execution": {**EXECUTION, "jobId": job_id}}).encode()),
    ]  # fmt: skip


@pytest.fixture
def service_identity(stack):
    """A raw MQTT client with the Jobs service's certificate, for thing-1's topics."""
    certs = stack.certificates.service
    device = RawDevice(
        stack, "thing-1", identity=(str(certs.certificate), str(certs.private_key)), subscribe=[]
    )
    yield device
    device.close()


def publish_all(device, messages) -> None:
    for suffix, raw in messages:
        device.publish(suffix, raw=raw)


def test_garbage_while_idle_and_while_a_job_runs_is_ignored(
    stack, agents, service_identity, caplog
):
    recorder = Recorder()
    agent = InProcessAgent(stack).add("BLOCK", recorder.blocking).add("QUICK", recorder.quick)
    agents.append(agent)
    agent.start()
    publish_all(service_identity, GARBAGE)  # idle
    create_job(stack, "real-1", {"jobType": "BLOCK"})
    wait_status(stack, "real-1", ["IN_PROGRESS"])
    publish_all(service_identity, garbage_for("real-1"))  # busy
    time.sleep(0.3)
    recorder.release.set()
    create_job(stack, "real-2", {"jobType": "QUICK"})
    wait_all_terminal(stack, {"real-1": "SUCCEEDED", "real-2": "SUCCEEDED"})
    assert agent.client.is_alive()
    assert recorder.runs("real-1") == 1 and recorder.runs("real-2") == 1
    assert recorder.runs("ghost-1") == 0
    assert "not JSON" in caplog.text


def test_a_deeply_nested_message_is_ignored(stack, agents, service_identity):
    recorder = Recorder()
    agent = InProcessAgent(stack).add("QUICK", recorder.quick)
    agents.append(agent)
    agent.start()
    deep = '{"execution": {"jobId": "x", "jobDocument": ' + "[" * 3000 + "]" * 3000 + "}}"
    service_identity.publish("notify-next", raw=deep.encode())
    time.sleep(0.2)
    create_job(stack, "after-deep", {"jobType": "QUICK"})
    assert wait_status(stack, "after-deep", timeout=4)["status"] == "SUCCEEDED"


class Impostor:
    """With the Jobs service stopped, answers the agent's requests itself, carrying the
    agent's own clientToken, with what ``reply(suffix, request)`` returns."""

    def __init__(self, stack, reply) -> None:
        certs = stack.certificates.service
        self.device = RawDevice(
            stack,
            "thing-1",
            identity=(str(certs.certificate), str(certs.private_key)),
            subscribe=["$aws/things/thing-1/jobs/start-next", "$aws/things/thing-1/jobs/+/update"],
        )
        self.answered = []
        self._reply = reply
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                suffix, request = self.device.wait_for(lambda s, b: True, timeout=0.2)
            except AssertionError:
                continue
            answer = self._reply(suffix, request)
            if answer is not None:
                reply_suffix, body = answer
                self.device.publish(reply_suffix, raw=json.dumps(body).encode())
                self.answered.append((suffix, reply_suffix))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.device.close()


def test_malformed_replies_to_the_agents_own_requests_are_survived(stack, agents):
    """Claims answered with broken executions, updates with wrong types and stale versions:
    the agent keeps going and, once the real service is back, finishes truthfully."""
    recorder = Recorder()
    agent = InProcessAgent(stack, request_timeout_seconds=1.0, heartbeat_seconds=0.3)
    agent.add("BLOCK", recorder.blocking).add("QUICK", recorder.quick)
    agents.append(agent)
    agent.start()
    create_job(stack, "true-1", {"jobType": "BLOCK"})
    wait_status(stack, "true-1", ["IN_PROGRESS"])
    stack.kill_service()
    broken_claims = iter(
        [
            {"execution": {"jobId": 42}},
            {"execution": {"jobId": "x", "executionNumber": "one", "versionNumber": None}},
            {"execution": []},
        ]
    )
    broken_updates = iter(
        [
            ("accepted", {"executionState": {"versionNumber": "abc", "status": 7}}),
            ("rejected", {"code": "VersionMismatch",
                          "executionState": {"versionNumber": 9999, "status": "IN_PROGRESS"}}),
            ("rejected", {"code": 12345, "message": ["x"]}),
            ("accepted", {"executionState": []}),
        ]
    )  # fmt: skip

    def reply(suffix, request):
        token = request.get("clientToken") if isinstance(request, dict) else None
        if suffix == "start-next":
            body = next(broken_claims, None)
            return None if body is None else ("start-next/accepted", {**body, "clientToken": token})
        kind_body = next(broken_updates, None)
        if kind_body is None:
            return None
        kind, body = kind_body
        return (f"{suffix}/{kind}", {**body, "clientToken": token})

    impostor = Impostor(stack, reply)
    try:
        wait_for(lambda: len(impostor.answered) >= 4, 15, "the agent's updates to be answered")
        recorder.release.set()  # the final status meets the impostor too, or silence
        time.sleep(1.0)
    finally:
        impostor.close()
    stack.start_service()
    create_job(stack, "true-2", {"jobType": "QUICK"})
    wait_all_terminal(stack, {"true-1": "SUCCEEDED", "true-2": "SUCCEEDED"}, timeout=30)
    assert agent.client.is_alive()
    assert recorder.runs("true-1") == 1 and recorder.runs("true-2") == 1
