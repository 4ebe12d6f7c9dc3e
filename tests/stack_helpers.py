"""The one set of helpers every end-to-end test uses on the local stack: settings editing, job
creation, reading executions, running ``jobs_agent.py`` once to its exit. The tier fixtures
(agent_core_fixtures, local_jobs_fixtures, resilience_fixtures, managed_fixtures) import these
rather than writing their own.
"""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

from local_jobs.stack import LocalStack

DOCUMENT: Mapping[str, Any] = {"jobType": "APT_UPDATE", "packages": ["cowsay"]}
JOBS_AGENT = Path(__file__).resolve().parent.parent / "jobs_agent.py"


def process_running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, ended but not yet reaped, counts as ended; so does a
    process gone between the open and the read of its /proc entry)."""
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def run_jobs_agent(
    *args: str, prefix: Sequence[str] = (), timeout: float = 30.0
) -> subprocess.CompletedProcess:
    """``jobs_agent.py ARGS`` run once to its exit, as a user runs it (``--check-config``,
    ``status``, a start that must refuse its settings): text output captured, no stdin, from
    the repository root. ``prefix`` goes before the interpreter (``capsh ... --``).
    subprocess.TimeoutExpired after ``timeout`` seconds."""
    return subprocess.run(
        [*prefix, sys.executable, str(JOBS_AGENT), *args],
        cwd=str(JOBS_AGENT.parent),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def set_settings(settings_path: Path, section: str, **values: Any) -> None:
    """Rewrite keys of one ``[section]`` of a settings file (made if missing); other keys and
    sections kept."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(settings_path)
    if not parser.has_section(section):
        parser.add_section(section)
    for key, value in values.items():
        parser.set(section, key, str(value))
    with open(settings_path, "w") as stream:
        parser.write(stream)


def create_job(
    stack: LocalStack,
    job_id: str,
    document: Any = DOCUMENT,
    thing: str = "thing-1",
    *,
    things: Optional[Iterable[str]] = None,
    **kwargs: Any,
) -> None:
    """CreateJob through the control plane with boto3, targeting ``thing`` (or each of
    ``things``); ``kwargs`` go to create_job as is."""
    targets = [stack.thing(name).arn for name in (things if things is not None else [thing])]
    stack.iot_client().create_job(
        jobId=job_id, targets=targets, document=json.dumps(document), **kwargs
    )


def execution(stack: LocalStack, job_id: str, thing: str = "thing-1") -> Dict[str, Any]:
    """The execution as DescribeJobExecution shows it; statusDetails flattened."""
    found = stack.iot_client().describe_job_execution(jobId=job_id, thingName=thing)["execution"]
    found["details"] = found.get("statusDetails", {}).get("detailsMap", {})
    return found


def executions(stack: LocalStack, thing: str = "thing-1") -> Dict[str, str]:
    """Every execution of ``thing`` at the service: job id -> status."""
    client = stack.iot_client()
    found: Dict[str, str] = {}
    kwargs: Dict[str, Any] = {"thingName": thing}
    while True:
        page = client.list_job_executions_for_thing(**kwargs)
        for summary in page.get("executionSummaries", []):
            found[summary["jobId"]] = summary["jobExecutionSummary"]["status"]
        token = page.get("nextToken")
        if not token:
            return found
        kwargs["nextToken"] = token
