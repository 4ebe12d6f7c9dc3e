"""Helpers for the resilience suite (tests/test_faults_*.py, test_hostile_*.py): a fault proxy
between agent and broker, and checks that every job ended truthfully.

The agent-core helpers (in-process JobClient, agent process, waiting) are reused from
agent_core_fixtures, settings edits and executions from stack_helpers; this module only adds
what the faults need.
"""

from __future__ import annotations

import collections
import json
import queue
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import pytest
from agent_core_fixtures import TERMINAL, AgentProcess, InProcessAgent, wait_for
from stack_helpers import executions, set_settings

from local_jobs.fault_proxy import FaultProxy
from local_jobs.stack import LocalStack


def through_proxy(stack: LocalStack, proxy: FaultProxy, thing: str = "thing-1") -> Path:
    """Point the thing's settings file at the proxy instead of the broker; return its path."""
    path = stack.thing(thing).settings_path
    set_settings(path, "connection", port=proxy.port)
    return path


def wait_all_terminal(
    stack: LocalStack, expected: Mapping[str, str], thing: str = "thing-1", timeout: float = 20.0
) -> Dict[str, str]:
    """Wait until every execution of ``thing`` is terminal; assert they are exactly
    ``expected`` (job id -> status): none lost, none left IN_PROGRESS, none invented."""
    last: Dict[str, str] = {}

    def settled() -> bool:
        nonlocal last
        last = executions(stack, thing)
        return all(status in TERMINAL for status in last.values()) and set(last) >= set(expected)

    try:
        wait_for(settled, timeout, f"every execution of {thing} terminal")
    except AssertionError:
        raise AssertionError(f"not all terminal after {timeout} s: {last}") from None
    assert last == dict(expected)
    return last


@pytest.fixture
def proxy(stack) -> Iterator[FaultProxy]:
    """A fault proxy in front of the stack's broker (the agent must be pointed at it)."""
    with FaultProxy(stack.mqtt_port) as made:
        yield made


@pytest.fixture
def agents(stack) -> Iterator[List[InProcessAgent]]:
    """In-process agents a test makes (append to the list); stopped at the end."""
    made: List[InProcessAgent] = []
    yield made
    for agent in made:
        agent.stop(grace_seconds=0)


@pytest.fixture
def processes(tmp_path) -> Iterator[Any]:
    """``start(settings_path, name)`` runs tests/agent_core_child.py as a process (test
    handlers SLEEP, SLEEP_ONCE, STUBBORN); every one started is killed at the end. All runs
    of one test share ``tmp_path / 'runs'``, so handler starts are counted across restarts."""
    made: List[AgentProcess] = []

    def start(settings_path: Path, name: str = "agent") -> AgentProcess:
        agent = AgentProcess(settings_path, tmp_path / f"{name}-{len(made)}.log", tmp_path / "runs")
        made.append(agent)
        return agent

    yield start
    for agent in made:
        agent.close()


class LoopbackMqtt:
    """Just enough of ``AWSIoTMQTTClient`` for a JobClient, answering like the Jobs service.

    For property tests that push hundreds of job documents through the JobClient's real
    dispatch in seconds; the behaviour users rely on is tested against the real broker and
    service elsewhere. Like the SDK, one thread delivers every message and ``onOnline``; an
    exception escaping the client's message callback ends that thread, as it ends the SDK's.
    ``queue_job`` hands out a job whose document is *raw JSON text* (duplicate keys kept),
    ``deliver`` injects any message, and every final status lands in ``finals``.
    """

    def __init__(self, thing_name: str) -> None:
        self.prefix = f"$aws/things/{thing_name}/jobs/"
        self.onOnline: Any = None
        self.onOffline: Any = None
        self.finals: queue.Queue[Tuple[str, str, Dict[str, str]]] = queue.Queue()
        self._callback: Any = None
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._pending: collections.deque[Tuple[str, str]] = collections.deque()
        self._versions: Dict[str, int] = {}
        self._lock = threading.Lock()  # guards _pending and _versions
        self._thread = threading.Thread(target=self._dispatch, name="loopback-sdk", daemon=True)

    # the SDK calls the JobClient makes

    def connect(self, keepalive: int = 60) -> bool:
        if not self._thread.is_alive():
            self._thread.start()
        self._inbox.put(("online", None))
        return True

    def subscribe(self, topic: str, qos: int, callback: Any) -> bool:
        self._callback = callback
        return True

    def disconnect(self) -> bool:
        self._inbox.put(None)
        return True

    def publishAsync(self, topic: str, payload: str, qos: int, ackCallback: Any = None) -> int:  # noqa: N802 - the SDK's name
        self._answer(topic[len(self.prefix) :], json.loads(payload))
        return 1

    # what a test does

    @property
    def delivering(self) -> bool:
        """False once an exception ended the delivery thread (as it ends the SDK's)."""
        return self._thread.is_alive()

    def deliver(self, topic: str, payload: bytes) -> None:
        """Hand ``payload`` to the client as a message on ``topic`` (a full topic)."""
        self._inbox.put((topic, payload))

    def queue_job(self, job_id: str, document_text: str) -> None:
        """Queue a job with this raw document text and tell the client (notify-next)."""
        with self._lock:
            self._pending.append((job_id, document_text))
        note = {"timestamp": 1, "execution": {"jobId": job_id, "executionNumber": 1}}
        self.deliver(self.prefix + "notify-next", json.dumps(note).encode())

    def final_of(self, job_id: str, timeout: float = 10.0) -> Tuple[str, Dict[str, str]]:
        """The final status and statusDetails the client reported for ``job_id``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no final status for {job_id} in {timeout} s")
            try:
                found, status, details = self.finals.get(timeout=remaining)
            except queue.Empty:
                continue
            if found == job_id:
                return status, details

    # the service side

    def _answer(self, suffix: str, request: Dict[str, Any]) -> None:
        token = json.dumps(request.get("clientToken"))
        if suffix == "start-next":
            with self._lock:
                job = self._pending.popleft() if self._pending else None
                if job is not None:
                    self._versions[job[0]] = 1
            raw = '{"clientToken": ' + token + ', "timestamp": 1'
            if job is not None:  # the document goes in as raw text
                raw += (
                    ', "execution": {"jobId": ' + json.dumps(job[0]) + ', "status": '
                    '"IN_PROGRESS", "executionNumber": 1, "versionNumber": 1, "statusDetails": '
                    + json.dumps(request.get("statusDetails") or {})  # as the service keeps them
                    + ', "jobDocument": '
                    + job[1]
                    + "}"
                )
            raw += "}"
            self.deliver(self.prefix + "start-next/accepted", raw.encode())
        elif suffix.endswith("/update"):
            job_id = suffix[: -len("/update")]
            with self._lock:
                version = self._versions.get(job_id, 1) + 1
                self._versions[job_id] = version
            status = request.get("status")
            if status != "IN_PROGRESS":
                self.finals.put((job_id, status, request.get("statusDetails") or {}))
            reply = {
                "clientToken": request.get("clientToken"),
                "timestamp": 1,
                "executionState": {"status": status, "versionNumber": version},
            }
            self.deliver(f"{self.prefix}{job_id}/update/accepted", json.dumps(reply).encode())

    def _dispatch(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            topic, payload = item
            if topic == "online":
                self.onOnline()
            else:
                self._callback(None, None, SimpleNamespace(topic=topic, payload=payload))


class SubprocessWatch:
    """Records every process this Python process starts while armed (audit events: no
    patching). One per process: audit hooks cannot be removed."""

    EVENTS = frozenset(
        ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork")
    )
    _instance: Optional[SubprocessWatch] = None

    def __init__(self) -> None:
        self.started: List[Tuple[str, str]] = []
        self.armed = False

    @classmethod
    def get(cls) -> SubprocessWatch:
        if cls._instance is None:
            cls._instance = cls()
            sys.addaudithook(cls._instance._hook)
        return cls._instance

    def _hook(self, event: str, args: Tuple[Any, ...]) -> None:
        if self.armed and event in self.EVENTS:
            self.started.append((event, repr(args)[:200]))
