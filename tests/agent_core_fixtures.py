"""Helpers for the agent-core end-to-end tests: an in-process JobClient, jobs, waiting.

The JobClient runs with the real SDK client against the real broker and local Jobs service;
timings are shortened so every test stays fast (the stack's service minute is 1 s).
"""

from __future__ import annotations

import datetime
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from stack_helpers import create_job, execution  # noqa: F401 - the tests' one copy, re-exported

from agent.job import JobContext
from agent.journal import Journal
from agent.mqtt import make_mqtt_client
from agent.settings import load_settings
from job_client import JobClient
from local_jobs import agent_process
from local_jobs.stack import LocalStack

REPO = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "agent_core_child.py"
TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "REMOVED")

# Fast timings for in-process clients.
FAST = dict(
    progress_interval_seconds=0.1,
    request_timeout_seconds=2.0,
    retry_max_seconds=1.0,
    shutdown_grace_seconds=2.0,
    keepalive_seconds=5,
)


def get_job_type(document: Any) -> Any:
    return document.get("jobType") if isinstance(document, dict) else None


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def wait_status(
    stack: LocalStack,
    job_id: str,
    statuses: Iterable[str] = TERMINAL,
    timeout: float = 10.0,
    thing: str = "thing-1",
) -> Dict[str, Any]:
    """Wait until the execution has one of ``statuses``; return it."""
    wanted = tuple(statuses)
    last: Dict[str, Any] = {}

    def check():
        nonlocal last
        last = execution(stack, job_id, thing)
        return last if last["status"] in wanted else None

    try:
        return wait_for(check, timeout, f"job {job_id} in {wanted}")
    except AssertionError:
        raise AssertionError(f"job {job_id} not in {wanted} after {timeout} s: {last}") from None


class InProcessAgent:
    """A JobClient for one thing of ``stack``, with the real SDK client and a journal."""

    def __init__(
        self,
        stack: LocalStack,
        thing: str = "thing-1",
        connect_timeout_seconds: float = 3.0,
        **options: Any,
    ) -> None:
        self.settings = load_settings(stack.thing(thing).settings_path)
        self.journal = Journal(self.settings.agent.state_dir)
        kwargs = dict(FAST)
        kwargs.update(options)
        mqtt = make_mqtt_client(
            self.settings.connection, connect_timeout_seconds=connect_timeout_seconds
        )
        self.client = JobClient(mqtt, thing, journal=self.journal, **kwargs)
        self.stopped = False

    def add(self, job_type: str, handler: Callable[..., Any], **kwargs: Any) -> InProcessAgent:
        self.client.add_handler(get_job_type, job_type, handler, **kwargs)
        return self

    def start(self, wait_ready: bool = True) -> InProcessAgent:
        self.client.start()
        if wait_ready:
            assert self.client.ready.wait(15), "job client not ready in 15 s"
        return self

    def stop(self, grace_seconds: Optional[float] = None) -> None:
        if not self.stopped:
            self.stopped = True
            self.client.stop(grace_seconds)


class Recorder:
    """Test handlers that record every call: which job, which attempt, in which order."""

    def __init__(self) -> None:
        self.calls: List[tuple] = []
        self.lock = threading.Lock()
        self.release = threading.Event()

    def record(self, document: Dict[str, Any], job: JobContext) -> None:
        with self.lock:
            self.calls.append((job.job_id, job.attempt))

    def runs(self, job_id: str) -> int:
        with self.lock:
            return sum(1 for called, _ in self.calls if called == job_id)

    def quick(self, document: Dict[str, Any], job: JobContext) -> Dict[str, str]:
        """Succeeds at once with the document's ``answer``."""
        self.record(document, job)
        return {"answer": str(document.get("answer", "done"))}

    def blocking(self, document: Dict[str, Any], job: JobContext) -> Dict[str, str]:
        """Reports progress until ``release`` is set or the job should stop."""
        self.record(document, job)
        step = 0
        while not self.release.is_set():
            if job.should_stop():
                return {"stopped": job.stop_reason}
            step += 1
            job.report_progress({"step": str(step)})
            self.release.wait(0.05)
        return {"steps": str(step)}


class AgentProcess(agent_process.AgentProcess):
    """``tests/agent_core_child.py`` (jobs_agent.run_agent with test handlers) as a process,
    started at once; local_jobs/agent_process.py does the process handling."""

    def __init__(self, settings_path: Path, log_path: Path, runs_path: Path) -> None:
        command = [sys.executable, str(CHILD), "-c", str(settings_path), "--runs", str(runs_path)]
        super().__init__(command, log_path)
        self.runs_path = runs_path
        self.start()

    def runs(self) -> List[str]:
        """One line per handler start: ``<job id> <attempt>``."""
        if not self.runs_path.exists():
            return []
        return self.runs_path.read_text().splitlines()

    def wait_log(self, text: str, timeout: float = 15.0) -> None:
        wait_for(lambda: text in self.log_text(), timeout, f"{text!r} in the agent log")

    def wait(self, timeout: Optional[float] = 20.0) -> int:
        return super().wait(timeout)

    def close(self) -> None:
        self.kill()


@contextmanager
def running_jobs_agent(
    settings_path: Path, log_path: Path, stop_timeout: float = 20.0
) -> Iterator[agent_process.AgentProcess]:
    """``jobs_agent.py -c settings_path`` as a user starts it, its output in ``log_path``.

    On leaving, a still-running agent gets SIGTERM, then SIGKILL after ``stop_timeout``.
    """
    command = agent_process.jobs_agent_command(settings_path)
    with agent_process.AgentProcess(command, log_path, stop_timeout=stop_timeout) as agent:
        yield agent


def make_pem(not_before: datetime.datetime, not_after: datetime.datetime) -> bytes:
    """A self-signed certificate (real DER, as OpenSSL and cryptography write it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "thing-1")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)
