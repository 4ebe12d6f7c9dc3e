"""Run child processes for the agent: no shell, optional other user, bounded in time and output.

stdout and stderr are drained at the same time by two threads, so a chatty program never
blocks on a full pipe, and only the last ``tail_bytes`` of each are kept, so output of any
size costs fixed memory (the device client killed handlers whose output passed its limit,
gh:awslabs/aws-iot-device-client#461). The program runs in its own session; on timeout or when
the job should stop, the whole process group gets SIGTERM and, 5 s later, SIGKILL.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import IO, Any, Deque, Dict, List, Optional, Sequence

log = logging.getLogger(__name__)

TAIL_BYTES = 4096
KILL_GRACE_SECONDS = 5.0
POLL_SECONDS = 0.1
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class User:
    """A local account a program runs as."""

    name: str
    uid: int
    gid: int
    home: str


def current_user() -> User:
    """The account the agent runs as."""
    entry = pwd.getpwuid(os.geteuid())
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def lookup_user(name: str) -> Optional[User]:
    """The local account ``name``, or None when there is none."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


@dataclass(frozen=True)
class ProcessResult:
    """How a program ended and the tails of what it wrote."""

    argv: Sequence[str]
    returncode: Optional[int]  # None when it had to be killed
    stdout: str
    stderr: str
    stderr_lines: int
    timed_out: bool = False
    stopped: bool = False  # the job was to stop (canceled, agent shutting down)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.stopped

    def describe(self) -> str:
        """``exit status 3`` / ``killed after the 60 s timeout`` / ``stopped: ...``."""
        if self.timed_out:
            return "killed: it ran past its time limit"
        if self.stopped:
            return "killed: the job was stopped"
        if self.returncode is not None and self.returncode < 0:
            return f"killed by signal {-self.returncode}"
        return f"exit status {self.returncode}"


class _Drain(threading.Thread):
    """Reads a pipe to its end, keeping the last ``limit`` bytes and counting lines."""

    def __init__(self, stream: IO[bytes], limit: int, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._stream = stream
        self._limit = limit
        self._chunks: Deque[bytes] = deque()
        self._size = 0
        self.lines = 0
        self._last = b"\n"

    def run(self) -> None:
        try:
            while True:
                chunk = self._stream.read1(65536) if hasattr(self._stream, "read1") else b""
                if not chunk:
                    break
                self.lines += chunk.count(b"\n")
                self._last = chunk[-1:]
                self._chunks.append(chunk)
                self._size += len(chunk)
                while self._size - len(self._chunks[0]) >= self._limit:
                    self._size -= len(self._chunks.popleft())
        except (OSError, ValueError) as error:
            log.debug("%s: read ended: %s", self.name, error)
        finally:
            self._stream.close()

    def text(self) -> str:
        if self._size and self._last != b"\n":
            self.lines += 1  # count an unterminated last line once
            self._last = b"\n"
        data = b"".join(self._chunks)[-self._limit :]
        return data.decode("utf-8", errors="replace")


def child_environment(user: User, search_path: str = SAFE_PATH) -> Dict[str, str]:
    """A small fixed environment: nothing of the agent's own leaks to the program."""
    return {
        "PATH": search_path,
        "HOME": user.home,
        "USER": user.name,
        "LOGNAME": user.name,
        "LANG": "C.UTF-8",
    }


def _identity_kwargs(user: Optional[User]) -> Dict[str, Any]:
    """Popen arguments that drop to ``user`` in the child (after fork, before exec)."""
    if user is None or user.uid == os.geteuid():
        return {}
    groups: List[int] = os.getgrouplist(user.name, user.gid)
    return {"user": user.uid, "group": user.gid, "extra_groups": groups}


def run_process(
    argv: Sequence[str],
    *,
    timeout: float,
    should_stop: Any = None,
    user: Optional[User] = None,
    env: Optional[Dict[str, str]] = None,
    cwd: Optional[str] = None,
    tail_bytes: int = TAIL_BYTES,
) -> ProcessResult:
    """Run ``argv`` (a list, never through a shell) and wait for it, at most ``timeout`` s.

    ``should_stop`` (a callable) is polled; when it turns true the program is ended. ``user``
    (other than the agent's own) makes the child drop to that account before it executes.
    Raises OSError when the program cannot be started (not found, not executable).
    """
    argv = [str(word) for word in argv]
    if user is not None and env is None:
        env = child_environment(user)
    process = subprocess.Popen(  # noqa: S603 - argv list, no shell
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        close_fds=True,
        start_new_session=True,
        env=env,
        cwd=cwd or (user.home if user is not None and os.path.isdir(user.home) else "/"),
        **_identity_kwargs(user),
    )
    assert process.stdout is not None and process.stderr is not None
    out = _Drain(process.stdout, tail_bytes, f"stdout-{process.pid}")
    err = _Drain(process.stderr, tail_bytes, f"stderr-{process.pid}")
    out.start()
    err.start()
    deadline = time.monotonic() + timeout
    timed_out = stopped = False
    while True:
        try:
            process.wait(POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() >= deadline:
            timed_out = True
        elif should_stop is not None and should_stop():
            stopped = True
        if timed_out or stopped:
            log.warning(
                "ending %s (pid %d): %s",
                argv[0],
                process.pid,
                "time limit" if timed_out else "job stopping",
            )
            _end_group(process)
            break
    if not (timed_out or stopped):
        _kill_leftovers(process.pid)
    # A grandchild that left the session may keep a pipe open: do not wait for it forever.
    out.join(KILL_GRACE_SECONDS)
    err.join(KILL_GRACE_SECONDS)
    stdout, stderr = out.text(), err.text()
    return ProcessResult(
        argv=tuple(argv),
        returncode=None if (timed_out or stopped) else process.returncode,
        stdout=stdout,
        stderr=stderr,
        stderr_lines=err.lines,
        timed_out=timed_out,
        stopped=stopped,
    )


def _kill_leftovers(pgid: int) -> None:
    """End what the program left running in its process group: a step ends with it."""
    try:
        os.killpg(pgid, signal.SIGKILL)
        log.warning("killed what process group %d left running", pgid)
    except (ProcessLookupError, PermissionError):
        pass


def _end_group(process: subprocess.Popen) -> None:
    for signum, wait in (
        (signal.SIGTERM, KILL_GRACE_SECONDS),
        (signal.SIGKILL, KILL_GRACE_SECONDS),
    ):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
    log.error("pid %d did not end after SIGKILL", process.pid)
