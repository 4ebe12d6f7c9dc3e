"""Load runs shared by the heavy benchmarks (``bench/run.py --heavy``) and the small CI tests
(``tests/test_load_small.py``): many agents, long queues, an idle soak with periodic jobs.

Correctness is checked the same way at every size: each job execution ends SUCCEEDED at the
service and its handler ran exactly once. Sizes and timings belong to the callers.
"""

from __future__ import annotations

import collections
import gc
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Counter, Dict, List, Sequence, Tuple

from agent.journal import Journal
from agent.mqtt import make_mqtt_client
from agent.settings import load_settings
from bench import procstat
from bench.agent_process import AgentProcess
from bench.context import privileged_connection
from bench.observer import JobsObserver
from job_client import JobClient
from jobs_agent import get_job_type

NOOP = "NOOP"
NOOP_DOCUMENT = json.dumps({"jobType": NOOP})


class CountingHandler:
    """A NOOP handler per thing that counts how often each (thing, job) ran."""

    def __init__(self) -> None:
        self.runs: Counter[Tuple[str, str]] = collections.Counter()
        self._runs_lock = threading.Lock()

    def for_thing(self, thing: str) -> Any:
        """The handler to register on ``thing``'s JobClient."""
        def handler(document: dict, job: Any) -> Dict[str, str]:
            with self._runs_lock:
                self.runs[(thing, job.job_id)] += 1
            return {}
        return handler


class InProcessAgents:
    """One JobClient per thing in this process, each with its own SDK client, certificate and
    journal, as ``jobs_agent.py`` wires them (threads, not processes: 200 of them fit)."""

    def __init__(self, settings_paths: Sequence[Any], handler: CountingHandler) -> None:
        self.clients: List[JobClient] = []
        for path in settings_paths:
            settings = load_settings(path)
            client = JobClient(make_mqtt_client(settings.connection),
                               settings.connection.thing_name,
                               journal=Journal(settings.agent.state_dir),
                               step_timeout_minutes=settings.agent.step_timeout_minutes)
            thing = settings.connection.thing_name
            client.add_handler(get_job_type, NOOP, handler.for_thing(thing))
            self.clients.append(client)

    def __enter__(self) -> InProcessAgents:
        for client in self.clients:
            client.start()
        for client in self.clients:
            if not client.ready.wait(60):
                raise TimeoutError(f"agent for {client.thing_name} not ready within 60 s")
        return self

    def __exit__(self, *exc_info: object) -> None:
        stoppers = [threading.Thread(target=client.stop, kwargs={"grace_seconds": 5})
                    for client in self.clients]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        self.clients.clear()
        gc.collect()  # free the SDK clients' sockets now (they sit in reference cycles)


@dataclass
class LoadResult:
    """What a load run did: executions expected, how each ended, and the CreateJob->SUCCEEDED
    seconds of those the observer saw finish (all of them unless the broker dropped some)."""

    expected: List[Tuple[str, str]]
    statuses: Dict[Tuple[str, str], str]
    handler_runs: Counter[Tuple[str, str]]
    seconds: float
    latencies: List[float] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        """Executions finished per second of the run."""
        return len(self.expected) / self.seconds

    def check(self) -> None:
        """Fill ``problems``: executions not SUCCEEDED, or whose handler did not run once."""
        for key in self.expected:
            status, runs = self.statuses.get(key), self.handler_runs.get(key, 0)
            if status != "SUCCEEDED" or runs != 1:
                self.problems.append(f"{key[0]}/{key[1]}: {status}, handler ran {runs} times")
        unexpected = set(self.handler_runs) - set(self.expected)
        self.problems.extend(f"{thing}/{job}: ran but never queued" for thing, job in unexpected)


def service_statuses(iot: Any, keys: Sequence[Tuple[str, str]]) -> Dict[Tuple[str, str], str]:
    """Each (thing, job) execution's status as the service's control plane reports it."""
    return {(thing, job): iot.describe_job_execution(jobId=job, thingName=thing)
            ["execution"]["status"] for thing, job in keys}


def run_noop_job(iot: Any, observer: JobsObserver, arn: str, thing: str, job_id: str,
                 timeout: float = 60.0, document: str = NOOP_DOCUMENT) -> Tuple[float, float]:
    """Create one NOOP job for ``thing`` (``document``: a NOOP one, signed or not) and wait for
    it; (created, finished) perf_counter times. RuntimeError when it ends other than SUCCEEDED,
    TimeoutError when it does not end."""
    created = time.perf_counter()
    iot.create_job(jobId=job_id, targets=[arn], document=document)
    observer.wait_for(lambda: observer.final_status(thing, job_id) is not None, timeout,
                      f"final status of {job_id}")
    status = observer.final_status(thing, job_id)
    if status != "SUCCEEDED":
        raise RuntimeError(f"NOOP job {job_id} on {thing} ended {status}")
    return created, observer.finished(created)[thing][job_id]


def _wait_completed(iot: Any, job_ids: Sequence[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(job_ids)
    while waiting:
        waiting = [job for job in waiting
                   if iot.describe_job(jobId=job)["job"]["status"] != "COMPLETED"]
        if waiting and time.monotonic() > deadline:
            raise TimeoutError(f"jobs {waiting[:5]} not completed within {timeout:g} s")
        if waiting:
            time.sleep(0.2)


def run_load(stack: Any, things: Sequence[str], jobs: int, *, prefix: str,
             queued_before_start: bool, job_gap_seconds: float = 0.0,
             timeout: float = 600.0) -> LoadResult:
    """Agents for ``things`` take ``jobs`` NOOP jobs, each job targeting every thing.

    With ``queued_before_start`` the jobs are queued before the agents start (a drain);
    otherwise they arrive one by one, ``job_gap_seconds`` apart, while the agents run (a
    stream). Returns the checked LoadResult; TimeoutError if the executions did not all
    finish within ``timeout``.
    """
    iot = stack.iot_client()
    credentials = [stack.thing(name) for name in things]
    arns = [item.arn for item in credentials]
    job_ids = [f"{prefix}-{index}" for index in range(jobs)]
    expected = [(thing, job) for job in job_ids for thing in things]
    handler = CountingHandler()

    created: Dict[str, float] = {}

    def queue(job_id: str) -> None:
        created[job_id] = time.perf_counter()
        iot.create_job(jobId=job_id, targets=arns, document=NOOP_DOCUMENT)

    watcher = JobsObserver(privileged_connection(stack), client_id=f"bench-observer-{prefix}")
    with watcher as observer:
        observer.watch(*things)
        if queued_before_start:
            for job_id in job_ids:
                queue(job_id)
        started = time.perf_counter()
        with InProcessAgents([item.settings_path for item in credentials], handler):
            if not queued_before_start:
                for job_id in job_ids:
                    queue(job_id)
                    time.sleep(job_gap_seconds)
            # The control plane, not the observer, says when all is done: under heavy load
            # the broker may drop QoS 1 messages queued for a slow observer (max_queued).
            _wait_completed(iot, job_ids, timeout)
            seconds = time.perf_counter() - started
    finished = observer.finished(0.0)
    latencies = [finished[thing][job] - created[job] for thing, job in expected
                 if job in finished.get(thing, {})]
    result = LoadResult(expected, service_statuses(iot, expected), handler.runs, seconds,
                        latencies)
    result.check()
    return result


@dataclass
class SoakSample:
    """The agent process after one periodic job: when, resident memory, open files, threads."""

    at: float
    rss_mib: float
    fds: int
    threads: int


def soak(stack: Any, observer: JobsObserver, agent: AgentProcess, thing: str, jobs: int,
         interval_seconds: float, prefix: str) -> List[SoakSample]:
    """Give an idle agent process one NOOP job every ``interval_seconds``; sample its memory,
    fds and threads after each. RuntimeError if a job does not SUCCEED or the agent exits."""
    iot = stack.iot_client()
    pid = agent.pid
    samples: List[SoakSample] = []
    for index in range(jobs):
        agent.check_running()
        run_noop_job(iot, observer, stack.thing(thing).arn, thing, f"{prefix}-{index}")
        time.sleep(interval_seconds)
        samples.append(SoakSample(time.monotonic(), procstat.rss_mib(pid), procstat.fd_count(pid),
                                  procstat.thread_count(pid)))
    return samples
