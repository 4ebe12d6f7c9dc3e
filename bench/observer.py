"""A privileged MQTT client that watches things' jobs topics and timestamps every message.

It connects with the local Jobs service's identity (the only one the broker lets read every
thing's topics), so it sees an agent's requests and the service's replies on one clock
(``time.perf_counter``, CLOCK_MONOTONIC, shared by every process on the machine). Timing an
agent from outside this way needs no hook in the agent and works for a subprocess agent too.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import paho.mqtt.client as mqtt

from bench.mqtt_tls import tls_client
from bench.sdk import Connection

TERMINAL = {"SUCCEEDED", "FAILED", "REJECTED"}


@dataclass(frozen=True)
class Seen:
    """One message seen: when, on which thing, the topic after ``jobs/``, and its payload."""

    at: float
    thing: str
    suffix: str
    payload: dict


def _payload(raw: bytes) -> dict:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class JobsObserver:
    """Records every message on ``$aws/things/<thing>/jobs/#`` of the things it watches."""

    def __init__(self, connection: Connection, client_id: str = "bench-observer") -> None:
        self._client = tls_client(connection, client_id)
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._connection = connection
        self._changed = threading.Condition()
        self._seen: List[Seen] = []
        self._acknowledged: set = set()
        self._requested: Dict[Tuple[str, str], str] = {}
        self._finished: List[Tuple[float, str, str, str]] = []

    def __enter__(self) -> JobsObserver:
        self._client.connect(self._connection.host, self._connection.port, keepalive=600)
        self._client.loop_start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, _client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        at = time.perf_counter()
        parts = message.topic.split("/", 4)  # $aws, things, <thing>, jobs, <suffix>
        if len(parts) != 5:
            return
        item = Seen(at, parts[2], parts[4], _payload(message.payload))
        with self._changed:
            self._seen.append(item)
            self._track_terminal(item)
            self._changed.notify_all()

    def _track_terminal(self, item: Seen) -> None:
        # The default update/accepted reply carries no status: match it to the last update
        # request for that job.
        job_id, _, action = item.suffix.partition("/")
        key = (item.thing, job_id)
        if action == "update":
            self._requested[key] = str(item.payload.get("status"))
        elif action == "update/accepted" and self._requested.get(key) in TERMINAL:
            self._finished.append((item.at, item.thing, job_id, self._requested.pop(key)))

    def _on_subscribe(self, _client: object, _userdata: object, mid: int, *_rest: object) -> None:
        with self._changed:
            self._acknowledged.add(mid)
            self._changed.notify_all()

    def watch(self, *things: str, timeout: float = 10.0) -> None:
        """Subscribe to the jobs topics of ``things``; returns once the broker acknowledged."""
        topics = [(f"$aws/things/{thing}/jobs/#", 1) for thing in things]
        result, mid = self._client.subscribe(topics)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"observer could not subscribe: {mqtt.error_string(result)}")
        self.wait_for(lambda: mid in self._acknowledged, timeout, f"SUBACK for {things}")

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Block until ``condition()`` (run under the lock) holds; TimeoutError names ``what``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"observer: no {what} within {timeout:g} s")
                self._changed.wait(left)

    def seen(self, since: float = 0.0) -> List[Seen]:
        """A copy of the messages seen at or after ``since``."""
        with self._changed:
            return [item for item in self._seen if item.at >= since]

    @property
    def finished_count(self) -> int:
        """How many accepted updates to a terminal status were seen so far (cheap to poll)."""
        return len(self._finished)

    def finished(self, since: float = 0.0) -> Dict[str, Dict[str, float]]:
        """``{thing: {job_id: time}}`` of the first accepted terminal update of each job."""
        done: Dict[str, Dict[str, float]] = {}
        with self._changed:
            for at, thing, job_id, _status in self._finished:
                if at >= since:
                    done.setdefault(thing, {}).setdefault(job_id, at)
        return done

    def final_status(self, thing: str, job_id: str) -> Optional[str]:
        """The terminal status the service accepted for the job, or None (not yet)."""
        with self._changed:
            for _at, done_thing, done_job, status in self._finished:
                if (done_thing, done_job) == (thing, job_id):
                    return status
        return None

    def finished_twice(self, since: float = 0.0) -> List[Tuple[str, str]]:
        """``(thing, job_id)`` of every job with more than one accepted terminal update."""
        with self._changed:
            keys = [(thing, job_id) for at, thing, job_id, _ in self._finished if at >= since]
        return sorted({key for key in keys if keys.count(key) > 1})

    def first_claim(self, thing: str, since: float, job_id: Optional[str] = None) -> float:
        """When ``thing`` sent the request that claimed ``job_id`` (any job if None), after
        ``since``: the start-next whose accepted reply handed that job out, or an update of
        that job to IN_PROGRESS. A start-next answered with no job (the agent asking for more
        work) is not a claim. LookupError if none was seen."""
        asked_at: Optional[float] = None
        for item in self.seen(since):
            if item.thing != thing:
                continue
            target, _, action = item.suffix.partition("/")
            if item.suffix == "start-next":
                asked_at = item.at
            elif item.suffix == "start-next/accepted" and asked_at is not None:
                execution = item.payload.get("execution")
                if isinstance(execution, dict) and job_id in (None, execution.get("jobId")):
                    return asked_at
            elif (action == "update" and item.payload.get("status") == "IN_PROGRESS"
                    and job_id in (None, target)):
                return item.at
        raise LookupError(f"no claim of {job_id or 'a job'} by {thing} seen since {since}")
