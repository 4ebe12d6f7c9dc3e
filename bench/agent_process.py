"""An agent run as its own process, so that the kernel's accounting of it is its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent


def real_agent_command(settings_path: os.PathLike) -> List[str]:
    """``jobs_agent.py`` exactly as a user starts it."""
    return [sys.executable, str(REPO_ROOT / "jobs_agent.py"), "-c", str(settings_path)]


def noop_agent_command(settings_path: os.PathLike) -> List[str]:
    """The real agent plus the NOOP job type (``bench/noop_agent.py``)."""
    return [sys.executable, "-m", "bench.noop_agent", "-c", str(settings_path)]


def sdk_idle_command(settings_path: os.PathLike) -> List[str]:
    """The bare SDK client that only connects, subscribes and idles (the idle baseline)."""
    return [sys.executable, "-m", "bench.sdk_idle_client", str(settings_path)]


class AgentProcess:
    """``with AgentProcess(command, log_path) as agent: agent.pid ...``; SIGTERM on exit."""

    def __init__(self, command: List[str], log_path: os.PathLike) -> None:
        self.command = command
        self.log_path = Path(log_path)
        self._process: Optional[subprocess.Popen] = None

    @property
    def pid(self) -> int:
        """The agent's process id; RuntimeError before start."""
        if self._process is None:
            raise RuntimeError("agent process not started")
        return self._process.pid

    def start(self) -> AgentProcess:
        """Start the agent, its output appended to ``log_path``."""
        environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        with open(self.log_path, "ab") as log_file:
            self._process = subprocess.Popen(self.command, cwd=str(REPO_ROOT), env=environment,
                                             stdin=subprocess.DEVNULL, stdout=log_file,
                                             stderr=subprocess.STDOUT)
        return self

    def check_running(self) -> None:
        """RuntimeError naming the log file when the agent has exited."""
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"agent exited with status {self._process.returncode}; "
                               f"see {self.log_path}")

    def wait_for_output(self, text: str, timeout: float = 30.0) -> None:
        """Block until ``text`` appears in the log; TimeoutError (or RuntimeError if it exited)."""
        deadline = time.monotonic() + timeout
        while text not in self.log_path.read_text(errors="replace"):
            self.check_running()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not in {self.log_path} within {timeout:g} s")
            time.sleep(0.05)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait up to ``timeout`` (then SIGKILL); returns the exit status."""
        process, self._process = self._process, None
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
