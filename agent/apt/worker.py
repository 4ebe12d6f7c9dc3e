"""``python -m agent.apt.worker``: one apt transaction in a fresh single-threaded process: an
APT_UPDATE install (agent/apt/install.py) or a Remove-Application removal
(agent/apt/remove.py), both on one apt session (agent/apt/session.py).

Protocol: the request is one JSON object on stdin (see ``WorkerConfig.from_json``); progress
events and then exactly one result go to stdout as JSON lines::

    {"event": "progress", "details": {"phase": "downloading", "downloadedBytes": "1234", ...}}
    {"event": "result", "ok": true, "result": {...}}
    {"event": "result", "ok": false, "errorCode": "HELD", "reason": "...", "result": {...}}

The process's own fd 1 is pointed at stderr, so nothing apt or dpkg print can corrupt the
protocol; dpkg's output goes to a log whose tail is put in the result. Names and versions from
the request are only used as cache lookups, never as arguments or apt options. SIGTERM asks the
worker to stop: it does so between steps, never while dpkg runs. A worker whose agent went away
(stdout broken) finishes the transaction without reporting it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from typing import IO, Any, Dict, Tuple

from agent.apt.install import Install
from agent.apt.progress import Throttle
from agent.apt.protocol import REMOVE, WorkerConfig, WorkerFailure
from agent.apt.remove import Removal
from agent.apt.session import AptSession
from agent.apt.workdir import work_dir

log = logging.getLogger("agent.apt.worker")


class _LineFormatter(logging.Formatter):
    """``message``, or ``warning: message`` / ``error: message`` above INFO."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


class _Protocol:
    """The JSON-lines stream to the handler (the process's original stdout).

    The reader can go away in the middle of a transaction: the agent killed, or restarted by
    systemd (KillMode=process) while dpkg runs. Then writing stops and the transaction goes on
    to its end, so dpkg is never interrupted; the restarted agent runs the job again and finds
    it done. An exception here would leave python-apt's commit with dpkg still running.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.reader_gone = False

    def send(self, message: Dict[str, Any]) -> None:
        if self.reader_gone:
            return
        try:
            self._stream.write(json.dumps(message, sort_keys=True) + "\n")
            self._stream.flush()
        except OSError as error:  # BrokenPipeError: the agent is gone
            self.reader_gone = True
            log.warning("the agent stopped reading (%s): going on to the end without it", error)
            # Its stderr pipe is gone with it: what is still written (and what is left in
            # the buffers at exit) goes nowhere instead of failing again.
            _to_devnull(self._stream.fileno(), 1, 2)

    def progress(self, details: Dict[str, str]) -> None:
        self.send({"event": "progress", "details": details})


def _to_devnull(*descriptors: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    for descriptor in descriptors:
        os.dup2(devnull, descriptor)
    os.close(devnull)


def _take_stdio() -> Tuple[IO[str], str]:
    """Read the request; keep the original stdout for the protocol; fd 1 becomes stderr and
    fd 0 /dev/null. Returns (protocol stream, request text)."""
    request_text = sys.stdin.read()
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return protocol, request_text


def main() -> int:
    """Run one transaction; 0 when a result (success or failure) was sent, 2 otherwise."""
    # The handler adds the one prefix a worker line gets in the agent's log (dpkg's own
    # lines already start "dpkg: "); only a warning or error says what it is.
    output = logging.StreamHandler(sys.stderr)
    output.setFormatter(_LineFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[output])
    stream, request_text = _take_stdio()
    protocol = _Protocol(stream)
    try:
        config = WorkerConfig.from_json(json.loads(request_text))
    except (ValueError, KeyError, TypeError) as error:
        log.error("bad request on stdin: %s", error)
        return 2
    stop_requested = []

    def on_signal(signum, frame) -> None:
        stop_requested.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    emit = Throttle(protocol.progress)
    with work_dir() as folder:
        session = AptSession(config, emit, lambda: bool(stop_requested), folder)
        plan = Removal(session) if config.operation == REMOVE else Install(session)
        try:
            result = plan.run()
        except WorkerFailure as failure:
            details = dict(failure.details)
            if session.log_tail and "log" not in details:
                details["log"] = session.log_tail
            protocol.send(
                {
                    "event": "result",
                    "ok": False,
                    "errorCode": failure.code,
                    "reason": failure.reason,
                    "details": details,
                    "result": {**session.state(), **failure.outcome},
                }
            )
            return 0
    protocol.send({"event": "result", "ok": True, "result": result})
    return 0


if __name__ == "__main__":
    _status = main()
    # The result is sent and the transaction is over (dpkg unlocked, work folder removed):
    # skip the interpreter's teardown, which frees the apt cache object by object (30-40 ms)
    # while the handler waits for this process to end.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_status)
