"""The start-next for the next job rides right behind a final update, and counts only once
that final status is settled.

The real local Jobs service answers a device's requests in the order they come, so the orders
AWS does not promise (start-next answered before the update sent just ahead of it, a final
update refused) are played here by a scripted service: a stand-in for the MQTT client that
records what the JobClient publishes and hands it the replies each test writes. The ordinary
order runs against the real service and broker in test_job_client_e2e.py and
test_load_small.py.
"""

from __future__ import annotations

import json
import queue
import threading
from types import SimpleNamespace
from typing import Any, Dict, List, Tuple

import pytest

from job_client import JobClient

THING = "thing-1"
PREFIX = f"$aws/things/{THING}/jobs/"


class ScriptedService:
    """Stands in for the AWSIoTMQTTClient: records publishes; ``reply`` delivers a message to
    the JobClient's callback as the SDK would."""

    def __init__(self) -> None:
        self.published: queue.Queue[Tuple[str, Dict[str, Any]]] = queue.Queue()
        self.callbacks: Dict[str, Any] = {}
        self.onOnline = None
        self.onOffline = None

    # the SDK calls the JobClient makes

    def connect(self, keepalive: int = 60) -> bool:
        if self.onOnline is not None:
            self.onOnline()
        return True

    def subscribe(self, topic: str, qos: int, callback) -> bool:
        self.callbacks[topic] = callback
        return True

    def publishAsync(self, topic: str, payload: str, qos: int, ackCallback=None) -> int:  # noqa: N802
        self.published.put((topic[len(PREFIX):], json.loads(payload)))
        return 1

    def disconnect(self) -> bool:
        return True

    # the test's side

    def next_request(self, timeout: float = 5.0) -> Tuple[str, Dict[str, Any]]:
        return self.published.get(timeout=timeout)

    def no_request(self, wait: float = 0.3) -> bool:
        try:
            topic, payload = self.published.get(timeout=wait)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected request {topic}: {payload}")

    def reply(self, suffix: str, payload: Dict[str, Any]) -> None:
        subscription = "+/update/" + suffix.split("/")[-1] if "/update/" in suffix else suffix
        message = SimpleNamespace(topic=PREFIX + suffix, payload=json.dumps(payload).encode())
        self.callbacks[PREFIX + subscription](None, None, message)

    def hand_out(self, claim: Dict[str, Any], job_id: str, version: int = 2) -> None:
        execution = {"jobId": job_id, "executionNumber": 1, "versionNumber": version,
                     "status": "IN_PROGRESS", "jobDocument": {"jobType": "QUICK"},
                     "statusDetails": claim["statusDetails"]}  # start-next sets them
        self.reply("start-next/accepted",
                   {"clientToken": claim["clientToken"], "execution": execution})

    def nothing_pending(self, claim: Dict[str, Any]) -> None:
        self.reply("start-next/accepted", {"clientToken": claim["clientToken"]})

    def accept(self, job_id: str, update: Dict[str, Any]) -> None:
        state = {"status": update["status"], "versionNumber": update["expectedVersion"] + 1}
        self.reply(f"{job_id}/update/accepted",
                   {"clientToken": update["clientToken"], "executionState": state})


@pytest.fixture
def scripted():
    service = ScriptedService()
    runs: List[str] = []
    ran = threading.Event()

    def quick(document, context):
        runs.append(context.job_id)
        ran.set()

    client = JobClient(service, THING, request_timeout_seconds=2.0, retry_max_seconds=0.5)
    client.add_handler(lambda document: document.get("jobType"), "QUICK", quick)
    client.start()
    yield service, runs
    client.stop(grace_seconds=1.0)


def expect(service: ScriptedService, suffix: str, within: float = 5.0) -> Dict[str, Any]:
    topic, payload = service.next_request(within)
    assert topic == suffix, (topic, payload)
    return payload


def run_first_job(service: ScriptedService) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Hand out job-1; the final update and the start-next behind it."""
    service.hand_out(expect(service, "start-next"), "job-1")
    final = expect(service, "job-1/update")
    assert final["status"] == "SUCCEEDED"
    claim = expect(service, "start-next")  # sent before the update was answered
    return final, claim


def test_start_next_is_sent_behind_the_final_update_and_its_answer_runs_the_next_job(scripted):
    service, runs = scripted
    final, claim = run_first_job(service)
    service.accept("job-1", final)
    service.hand_out(claim, "job-2")
    assert expect(service, "job-2/update")["status"] == "SUCCEEDED"
    assert runs == ["job-1", "job-2"]


def test_a_start_next_answered_before_the_final_update_is_dropped_and_sent_again(scripted):
    service, runs = scripted
    final, claim = run_first_job(service)
    service.hand_out(claim, "job-1", version=3)  # answered first: still job-1, IN_PROGRESS
    assert service.no_request()
    service.accept("job-1", final)
    again = expect(service, "start-next", within=1.0)  # at once, not after a request timeout
    assert again["clientToken"] != claim["clientToken"]
    service.nothing_pending(again)
    assert service.no_request()
    assert runs == ["job-1"]


def test_a_refused_final_update_drops_the_start_next_behind_it(scripted):
    service, runs = scripted
    final, claim = run_first_job(service)
    service.reply("job-1/update/rejected", {
        "clientToken": final["clientToken"], "code": "VersionMismatch",
        "executionState": {"status": "IN_PROGRESS", "versionNumber": 7},
    })
    resent = expect(service, "job-1/update")
    assert resent["status"] == "SUCCEEDED" and resent["expectedVersion"] == 7
    service.hand_out(claim, "job-2")  # the dropped claim's late answer: not taken
    assert expect(service, "start-next")["clientToken"] != claim["clientToken"]
    service.accept("job-1", resent)
    assert service.no_request()
    assert runs == ["job-1"]


def test_a_start_next_whose_answer_never_comes_is_sent_again(scripted):
    service, runs = scripted
    final, claim = run_first_job(service)
    service.accept("job-1", final)
    # No answer to the claim: after the request timeout (2 s) and a backoff, a fresh one.
    again = expect(service, "start-next")
    assert again["clientToken"] != claim["clientToken"]
