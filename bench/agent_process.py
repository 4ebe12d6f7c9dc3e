"""An agent run as its own process, so that the kernel's accounting of it is its own.

The process handling is local_jobs/agent_process.py's (shared with the demo and the tests);
this module names the bench's commands and runs them with the repository on PYTHONPATH.
"""

from __future__ import annotations

import os
import sys
from typing import List

from local_jobs import agent_process
from local_jobs.agent_process import REPO_ROOT, jobs_agent_command


def real_agent_command(settings_path: os.PathLike) -> List[str]:
    """``jobs_agent.py`` exactly as a user starts it."""
    return jobs_agent_command(settings_path)


def noop_agent_command(settings_path: os.PathLike) -> List[str]:
    """The real agent plus the NOOP job type (``bench/noop_agent.py``)."""
    return [sys.executable, "-m", "bench.noop_agent", "-c", str(settings_path)]


def sdk_idle_command(settings_path: os.PathLike) -> List[str]:
    """The bare SDK client that only connects, subscribes and idles (the idle baseline)."""
    return [sys.executable, "-m", "bench.sdk_idle_client", str(settings_path)]


class AgentProcess(agent_process.AgentProcess):
    """``with AgentProcess(command, log_path) as agent: agent.pid ...``; SIGTERM on exit
    (SIGKILL after 60 s)."""

    def __init__(self, command: List[str], log_path: os.PathLike) -> None:
        super().__init__(command, log_path, env={"PYTHONPATH": str(REPO_ROOT)}, stop_timeout=60.0)
