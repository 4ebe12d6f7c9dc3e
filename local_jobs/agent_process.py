"""The agent run as a child process: one helper for the demo, the benchmarks and the tests.

``AgentProcess(command, log_path).start()`` runs ``command`` (``jobs_agent_command(settings)``
for ``jobs_agent.py`` exactly as a user starts it, or a test/bench entry point) from the
repository root with its output appended to ``log_path``. ``stop()`` sends SIGTERM, waits,
then SIGKILLs and returns the exit status; ``kill()`` is a power cut. Each caller's own needs
are parameters: extra environment (``NOTIFY_SOCKET``, ``PYTHONPATH``), variables to drop, a
new session (so Ctrl-C reaches only the caller) and a ``preexec_fn``.

Nothing here is specific to a caller: the demo's READY listener, the bench's /proc sampling
and the tests' handler-run files stay with them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.05


def jobs_agent_command(
    settings_path: os.PathLike, script: Optional[os.PathLike] = None, python: str = sys.executable
) -> List[str]:
    """``jobs_agent.py -c SETTINGS`` exactly as a user starts it (``script`` for another copy)."""
    return [python, str(script or REPO_ROOT / "jobs_agent.py"), "-c", str(settings_path)]


class AgentProcess:
    """``with AgentProcess(command, log_path) as agent: agent.pid ...``; SIGTERM on exit.

    ``log_path`` None leaves the output on the caller's terminal. ``env`` adds variables to
    this process's environment (``PYTHONUNBUFFERED=1`` always), ``env_remove`` drops some.
    """

    def __init__(
        self,
        command: Sequence[str],
        log_path: Optional[os.PathLike] = None,
        *,
        env: Optional[Mapping[str, str]] = None,
        env_remove: Sequence[str] = (),
        new_session: bool = False,
        preexec_fn: Optional[Callable[[], None]] = None,
        stop_timeout: float = 30.0,
    ) -> None:
        self.command = list(command)
        self.log_path = Path(log_path) if log_path is not None else None
        self.environment = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        for name in env_remove:
            self.environment.pop(name, None)
        self.new_session = new_session
        self.preexec_fn = preexec_fn
        self.stop_timeout = stop_timeout
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> AgentProcess:
        """Start the command, its output appended to ``log_path``; returns self."""
        log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                self.command,
                cwd=str(REPO_ROOT),
                env=self.environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT if log else None,
                start_new_session=self.new_session,
                preexec_fn=self.preexec_fn,  # noqa: PLW1509 - callers pass prctl only
            )
        finally:
            if log is not None:
                log.close()  # the child holds its own copy
        return self

    def _started(self) -> subprocess.Popen:
        if self.process is None:
            raise RuntimeError("agent process not started")
        return self.process

    @property
    def pid(self) -> int:
        """The agent's process id; RuntimeError before start."""
        return self._started().pid

    @property
    def returncode(self) -> Optional[int]:
        return None if self.process is None else self.process.poll()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_running(self) -> None:
        """RuntimeError naming the log file when the agent has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"agent exited with status {self.process.returncode}; see {self.log_path}"
            )

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_output(self, text: str, timeout: float = 30.0, exited_ok: bool = False) -> None:
        """Block until ``text`` is in the log; TimeoutError, or RuntimeError when the agent
        exited first (unless ``exited_ok``: then only the timeout ends the wait)."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if not exited_ok:
                self.check_running()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not in {self.log_path} within {timeout:g} s")
            time.sleep(POLL_SECONDS)

    def signal(self, signum: int) -> None:
        self._started().send_signal(signum)

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for the exit (subprocess.TimeoutExpired after ``timeout``); the status."""
        return self._started().wait(timeout)

    def stop(self, timeout: Optional[float] = None) -> Optional[int]:
        """SIGTERM, wait up to ``timeout`` (default ``stop_timeout``), then SIGKILL; the exit
        status (None when never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self, timeout: float = 10.0) -> Optional[int]:
        """SIGKILL now (a power cut) and wait for it; the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait(timeout)

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
