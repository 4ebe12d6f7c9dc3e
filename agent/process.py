"""Run child processes for the agent: no shell, optional other user, bounded in time and output.

``spawn`` is the one way the agent starts a program (the managed steps through
``run_process``, the APT handler its worker): in its own session, stdout and stderr drained at
the same time by two threads into sinks, so a chatty program never blocks on a full pipe.
``run_process`` keeps only the last ``tail_bytes`` of each, so output of any size costs fixed
memory (the device client killed handlers whose output passed its limit,
gh:awslabs/aws-iot-device-client#461); on timeout or when the job should stop, the whole
process group gets SIGTERM and, 5 s later, SIGKILL.
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
from typing import IO, Any, Callable, Deque, Dict, List, Optional, Sequence

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


class _Reader(threading.Thread):
    """Reads a pipe to its end in chunks, handing each to ``sink``; ``on_end()`` after."""

    def __init__(
        self,
        stream: IO[bytes],
        sink: Callable[[bytes], None],
        name: str,
        on_end: Optional[Callable[[], None]] = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._stream = stream
        self._sink = sink
        self._on_end = on_end

    def run(self) -> None:
        try:
            while True:
                chunk = self._stream.read1(65536) if hasattr(self._stream, "read1") else b""
                if not chunk:
                    break
                self._sink(chunk)
        except (OSError, ValueError) as error:
            log.debug("%s: read ended: %s", self.name, error)
        finally:
            self._stream.close()
            if self._on_end is not None:
                self._on_end()


class Tail:
    """A sink keeping the last ``limit`` bytes of a stream and counting its lines."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: Deque[bytes] = deque()
        self._size = 0
        self.lines = 0
        self._last = b"\n"

    def __call__(self, chunk: bytes) -> None:
        self.lines += chunk.count(b"\n")
        self._last = chunk[-1:]
        self._chunks.append(chunk)
        self._size += len(chunk)
        while self._size - len(self._chunks[0]) >= self._limit:
            self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        if self._size and self._last != b"\n":
            self.lines += 1  # count an unterminated last line once
            self._last = b"\n"
        data = b"".join(self._chunks)[-self._limit :]
        return data.decode("utf-8", errors="replace")


class Lines:
    """A sink handing ``on_line`` each complete line (without its newline); a line longer
    than ``limit`` bytes is handed on in pieces, so memory stays bounded. ``close()`` hands on
    an unterminated last line."""

    def __init__(self, on_line: Callable[[bytes], None], limit: int = 65536) -> None:
        self._on_line = on_line
        self._limit = limit
        self._partial = b""

    def __call__(self, chunk: bytes) -> None:
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            self._on_line(line)
        while len(self._partial) >= self._limit:
            self._on_line(self._partial[: self._limit])
            self._partial = self._partial[self._limit :]

    def close(self) -> None:
        if self._partial:
            partial, self._partial = self._partial, b""
            self._on_line(partial)


class Child:
    """A program running in its own session (its process group is its pid), its stdout and
    stderr drained by two threads into sinks."""

    def __init__(self, process: subprocess.Popen, readers: List[_Reader]) -> None:
        self.process = process
        self._readers = readers

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> Optional[int]:
        return self.process.returncode

    def send_input(self, data: bytes) -> None:
        """Write ``data`` to the program's stdin and close it (a program already gone is
        not an error here: its end is seen by ``poll``)."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(data)
            self.process.stdin.close()
        except BrokenPipeError:
            pass

    def poll(self) -> Optional[int]:
        return self.process.poll()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait up to ``timeout`` s for the program to end; True when it has."""
        try:
            self.process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the program alone (not its group)."""
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def end_group(self) -> None:
        """End the program's whole process group: SIGTERM, then SIGKILL after the grace."""
        for signum in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, signum)
            except ProcessLookupError:
                pass
            if self.wait(KILL_GRACE_SECONDS):
                return
        log.error("pid %d did not end after SIGKILL", self.process.pid)

    def kill_leftovers(self) -> None:
        """End what the program left running in its process group."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
            log.warning("killed what process group %d left running", self.process.pid)
        except (ProcessLookupError, PermissionError):
            pass

    def join_readers(self) -> None:
        """Wait for the drains; a grandchild that left the session may keep a pipe open, so
        not forever."""
        for reader in self._readers:
            reader.join(KILL_GRACE_SECONDS)


def spawn(
    argv: Sequence[str],
    *,
    stdout: Callable[[bytes], None],
    stderr: Callable[[bytes], None],
    stdout_end: Optional[Callable[[], None]] = None,
    stdin_pipe: bool = False,
    user: Optional[User] = None,
    env: Optional[Dict[str, str]] = None,
    cwd: Optional[str] = None,
) -> Child:
    """Start ``argv`` (a list, never through a shell) in its own session; its output goes to
    the ``stdout``/``stderr`` sinks (chunks of bytes, from two threads), ``stdout_end()`` is
    called once stdout is closed. stdin is /dev/null unless ``stdin_pipe`` (then see
    ``Child.send_input``). Raises OSError when the program cannot be started."""
    process = subprocess.Popen(  # noqa: S603 - argv list, no shell
        [str(word) for word in argv],
        stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        close_fds=True,
        start_new_session=True,
        env=env,
        cwd=cwd,
        **_identity_kwargs(user),
    )
    assert process.stdout is not None and process.stderr is not None
    readers = [
        _Reader(process.stdout, stdout, f"stdout-{process.pid}", stdout_end),
        _Reader(process.stderr, stderr, f"stderr-{process.pid}"),
    ]
    for reader in readers:
        reader.start()
    return Child(process, readers)


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
    out, err = Tail(tail_bytes), Tail(tail_bytes)
    child = spawn(
        argv,
        stdout=out,
        stderr=err,
        user=user,
        env=env,
        cwd=cwd or (user.home if user is not None and os.path.isdir(user.home) else "/"),
    )
    deadline = time.monotonic() + timeout
    timed_out = stopped = False
    while not child.wait(POLL_SECONDS):
        if time.monotonic() >= deadline:
            timed_out = True
        elif should_stop is not None and should_stop():
            stopped = True
        if timed_out or stopped:
            log.warning(
                "ending %s (pid %d): %s",
                argv[0],
                child.pid,
                "time limit" if timed_out else "job stopping",
            )
            child.end_group()
            break
    if not (timed_out or stopped):
        child.kill_leftovers()
    child.join_readers()
    stdout, stderr = out.text(), err.text()
    return ProcessResult(
        argv=tuple(argv),
        returncode=None if (timed_out or stopped) else child.returncode,
        stdout=stdout,
        stderr=stderr,
        stderr_lines=err.lines,
        timed_out=timed_out,
        stopped=stopped,
    )
