#!/usr/bin/env python3
"""AWS IoT Jobs device agent: load the settings, wire the handlers, run until SIGTERM/SIGINT.

    ./jobs_agent.py [-c settings.conf] [--check-config] [--log-level LEVEL] [--version]
    ./jobs_agent.py status [-c settings.conf] [--json]

Exit status: 0 after a clean stop (or valid settings with --check-config), 2 for a settings or
start-up error, 1 when the agent stopped by itself (an internal error; systemd restarts it).
``status`` says what the agent is doing, from its state directory (running or not); 2 when
that directory is missing or unreadable.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import logging
import os
import select
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any, Callable, List, Optional, Sequence, Tuple

from agent.activity import StatusReporter
from agent.apt.handler import AptUpdateHandler
from agent.apt.settings import load_apt_settings
from agent.errors import SettingsError
from agent.journal import Journal
from agent.managed import managed_handlers
from agent.settings import (
    LOG_LEVELS,
    Settings,
    connection_problems,
    load_settings,
    load_state_dir,
)
from agent.signing import DocumentGate, document_gate_from_settings
from agent.status import format_status, read_status
from agent.tls import certificate_problem
from agent.version import __version__
from job_client import JobClient

log = logging.getLogger("jobs_agent")

HERE = Path(__file__).resolve().parent
DEFAULT_SETTINGS = HERE / "settings.conf"
LIVENESS_CHECK_SECONDS = 30.0  # how often, without a systemd watchdog, main checks the client
SECOND_SIGNAL_POLL_SECONDS = 0.2  # while stopping, how soon a second SIGTERM/SIGINT is seen

HandlerSpec = Tuple[Callable[[Any], Any], Any, Callable[..., Any]]


def get_job_type(document: Any) -> Any:
    """The ``jobType`` of a job document (None when it is not a JSON object)."""
    return document.get("jobType") if isinstance(document, dict) else None


get_job_type.label = "jobType"  # type: ignore[attr-defined]  # how reasons name the field


def _program_name() -> str:
    """What the operator typed: ``iot-jobs-agent`` from the Debian package, else jobs_agent.py."""
    called = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "iot-jobs-agent" if called == "iot-jobs-agent" else "jobs_agent.py"


def parse_args(
    argv: Optional[Sequence[str]], default_settings: Path = DEFAULT_SETTINGS
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=_program_name(),
        description="AWS IoT Jobs device agent (APT_UPDATE jobs, AWS managed job templates).",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=("run", "status"),
        default="run",
        help="run (the default): run the agent; status: what the agent is doing and its last "
        "jobs, read from its state directory (works with the agent stopped too)",
    )
    parser.add_argument(
        "--json", action="store_true", help="status: print one JSON object instead of text"
    )
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=default_settings,
        help=f"settings file (default: {default_settings})",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="check the settings file, say what is wrong, and exit (0 when valid)",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        help="overrides [agent] log_level",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # The SDK logs every publish at INFO; keep its chatter for DEBUG.
    sdk_level = logging.DEBUG if level == "DEBUG" else logging.WARNING
    logging.getLogger("AWSIoTPythonSDK").setLevel(sdk_level)
    # The format shows no source line, thread or process, so their collection is skipped, as
    # the Logging HOWTO's "Optimization" section says: findCaller's walk up the stack was the
    # costliest part of each of a job's log lines.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def default_handlers(settings: Settings) -> List[HandlerSpec]:
    """The handlers this agent runs: APT_UPDATE, then the AWS managed job templates.

    Raises SettingsError for a bad ``[apt]``, ``[managed]``, ``[services]``, ``[reboot]``,
    ``[download]`` or ``[run_command]`` section.
    """
    apt_settings = load_apt_settings(settings)
    handlers: List[HandlerSpec] = [(get_job_type, "APT_UPDATE", AptUpdateHandler(apt_settings))]
    handlers.extend(managed_handlers(settings))
    return handlers


def _missing_settings_hint(path: Path) -> str:
    example = HERE / "settings.conf.example"
    return (
        f"Make one from the example and fill in [connection]:\n"
        f"    cp {example} {path}\n"
        f"or try the agent against a local Jobs service first: ./start.sh --local"
    )


class ShutdownSignals:
    """SIGTERM and SIGINT only set a flag; ``wait`` sleeps until one arrives.

    The wake-up goes through a pipe that the interpreter writes to on every signal
    (``signal.set_wakeup_fd``), so waiting needs neither polling nor locks in the handler.
    """

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.count = 0  # signals received so far
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._previous: dict = {}
        self._previous_wakeup_fd = -1

    def install(self) -> None:
        """Install the handlers (main thread only)."""
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._write_fd)
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def restore(self) -> None:
        """Put back the previous handlers and close the pipe."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        os.close(self._read_fd)
        os.close(self._write_fd)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.received = signum
        self.count += 1

    def wait(self, timeout: Optional[float]) -> bool:
        """Sleep until a signal arrived or ``timeout`` passed; True when one arrived."""
        if self.received is None:
            try:
                select.select([self._read_fd], [], [], timeout)
            except InterruptedError:
                pass
            try:
                os.read(self._read_fd, 512)
            except BlockingIOError:
                pass
        return self.received is not None


def _lock_state_dir(settings: Settings) -> IO[bytes]:
    """Create the state directory and hold its lock, so two agents never share a journal.

    Raises SettingsError (naming the settings file, section and key) when it cannot be made
    or written, or another agent holds it.
    """
    state_dir = settings.agent.state_dir
    where = f"{settings.path}: [agent] state_dir"
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = open(state_dir / "agent.lock", "wb")  # noqa: SIM115 - held until exit
    except OSError as error:
        raise SettingsError(f"{where}: cannot use {str(state_dir)!r}: {error.strerror}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        lock.close()
        if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise SettingsError(
                f"{where}: another agent is running with {str(state_dir)!r} (it holds agent.lock)"
            ) from None
        raise SettingsError(
            f"{where}: cannot lock {state_dir}/agent.lock: {error.strerror}"
        ) from None
    return lock


def explain_connection_failure(settings: Settings) -> Optional[str]:
    """Why connecting cannot work, naming the file, section and key at fault; None when the
    settings look right (the cause is then elsewhere: network, policy, endpoint).

    Read afresh at every call: the files may have been replaced while the agent retries.
    """
    problems = connection_problems(settings)
    if problems:
        return problems[0]
    expired = certificate_problem(settings.connection.certificate)
    if expired:
        return f"{settings.path}: [connection] certificate: {expired}"
    return None


def _make_notifier() -> Any:
    """The systemd notifier, or None when the module is not available."""
    try:
        from agent.systemd_notify import SystemdNotifier
    except ImportError as error:
        log.debug("no systemd notification: %s", error)
        return None
    return SystemdNotifier()


def run_agent(
    settings: Settings,
    handlers: Sequence[HandlerSpec],
    mqtt_client: Any = None,
    signals: Optional[ShutdownSignals] = None,
    document_gate: Optional[DocumentGate] = None,
) -> int:
    """Run the job client with ``handlers`` until SIGTERM/SIGINT; return the exit status.

    ``mqtt_client`` defaults to one made from ``settings.connection``; ``signals`` to freshly
    installed SIGTERM/SIGINT handlers (main thread only); ``document_gate`` (signatures, from
    ``[security]``) checks each document before any handler.
    """
    agent = settings.agent
    try:
        lock = _lock_state_dir(settings)
    except SettingsError as error:
        log.error("%s", error)
        return 2
    notifier = _make_notifier()
    if mqtt_client is None:
        from agent.mqtt import make_mqtt_client

        mqtt_client = make_mqtt_client(settings.connection)

    activity = StatusReporter(agent.state_dir, notifier)
    activity.connecting()

    def on_ready() -> None:
        activity.connected()
        if notifier is not None:
            notifier.ready(activity.snapshot()["line"])

    certificate = settings.connection.certificate
    problem = certificate_problem(certificate)
    if problem:
        # Not fatal here (--check-config makes it so): the clock may yet be set by NTP, or
        # the file replaced, while the agent retries.
        log.error(
            "%s: [connection] certificate: %s; connecting will fail until that changes",
            settings.path,
            problem,
        )

    client = JobClient(
        mqtt_client,
        settings.connection.thing_name,
        journal=Journal(agent.state_dir),
        step_timeout_minutes=agent.step_timeout_minutes,
        heartbeat_seconds=agent.heartbeat_seconds,
        progress_interval_seconds=agent.progress_interval_seconds,
        shutdown_grace_seconds=agent.shutdown_grace_seconds,
        on_ready=on_ready,
        explain_connection_failure=lambda: explain_connection_failure(settings),
        document_gate=document_gate,
        activity=activity,
    )
    for filter_, value, handler in handlers:
        client.add_handler(filter_, value, handler)
    own_signals = signals is None
    if signals is None:
        signals = ShutdownSignals()
        signals.install()
    try:
        try:
            client.start()
        except OSError as error:
            log.error(
                "%s: [agent] state_dir: cannot write the journal in %r: %s",
                settings.path,
                str(agent.state_dir),
                error.strerror or error,
            )
            return 2
        log.info(
            "agent for thing %s started (endpoint %s:%d)",
            settings.connection.thing_name,
            settings.connection.endpoint,
            settings.connection.port,
        )
        return _wait_for_shutdown(
            client,
            signals,
            notifier,
            activity,
            agent.watchdog_offline_seconds,
            agent.shutdown_grace_seconds,
        )
    finally:
        activity.stopped()
        if own_signals:
            signals.restore()
        lock.close()


def _wait_for_shutdown(
    client: JobClient,
    signals: ShutdownSignals,
    notifier: Any,
    activity: StatusReporter,
    offline_limit: float,
    grace_seconds: float,
) -> int:
    watchdog = notifier.watchdog_interval() if notifier is not None else None
    tick = watchdog / 2 if watchdog else LIVENESS_CHECK_SECONDS
    while not signals.wait(tick):
        if not client.is_alive():
            log.error("the job client stopped unexpectedly; exiting")
            return 1
        activity.observe(client.is_connected() if client.ready.is_set() else None)
        if watchdog and client.offline_seconds() < offline_limit:
            notifier.watchdog()  # fed only while connected or not offline for too long
    log.info("signal %s received: shutting down", signals.received)
    activity.stopping()
    if notifier is not None:
        notifier.stopping(activity.snapshot()["line"])
    client.stop(wait=False)
    # The running job may take the whole grace period: keep the watchdog fed meanwhile, but
    # not forever (the final status gets one request timeout, the disconnect its own). A
    # second SIGTERM/SIGINT ends the grace period at once: the running job is handed over.
    give_up = time.monotonic() + client.stop_timeout(grace_seconds)
    seen = signals.count
    next_watchdog = time.monotonic() + tick
    while not client.wait_stopped(SECOND_SIGNAL_POLL_SECONDS):
        now = time.monotonic()
        if now > give_up:
            log.error("the job client did not stop in time; exiting anyway")
            return 1
        if signals.count > seen:
            seen = signals.count
            log.info(
                "signal %s received again: ending the grace period now; a running job is "
                "handed over to the next start",
                signals.received,
            )
            client.stop(grace_seconds=0, wait=False)
            give_up = min(give_up, now + client.stop_timeout(0))
        if watchdog and now >= next_watchdog:
            notifier.watchdog()
            next_watchdog = now + tick
    log.info("agent stopped")
    return 0


def show_status(path: Path, as_json: bool) -> int:
    """Print what the agent with the settings file ``path`` is doing; 0, or 2 when its state
    directory cannot be read (the message names the setting)."""
    try:
        state_dir = load_state_dir(path)
        report = read_status(state_dir, where=f"{path}: [agent] state_dir")
    except SettingsError as error:
        print(f"jobs_agent.py status: {error}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(format_status(report))
    return 0


def main(argv: Optional[Sequence[str]] = None, default_settings: Path = DEFAULT_SETTINGS) -> int:
    """Run the agent; see the module docstring for the exit status.

    ``default_settings``: the settings file used without ``-c`` (the Debian package's
    ``/usr/bin/iot-jobs-agent`` passes ``/etc/iot-jobs-agent/settings.conf``).
    """
    args = parse_args(argv, default_settings)
    if args.command == "status":
        return show_status(args.config, args.json)
    configure_logging(args.log_level or "INFO")
    path = args.config
    try:
        settings = load_settings(path)
        handlers = default_handlers(settings)
        document_gate = document_gate_from_settings(settings)
    except SettingsError as error:
        log.error("bad settings:\n%s", error)
        if not path.exists():
            log.error("%s", _missing_settings_hint(path))
        return 2
    # What the TLS stack and AWS IoT would refuse, named before they do. A certificate not
    # valid now is fatal only here: at start-up the clock may yet be set by NTP.
    problems = connection_problems(settings)
    expired = certificate_problem(settings.connection.certificate)
    if expired and args.check_config:
        problems.append(f"{path}: [connection] certificate: {expired}")
    if problems:
        log.error("bad settings:\n%s", "\n".join(problems))
        return 2
    if args.check_config:
        print(f"{path}: settings are valid")  # the answer a user asked for, on stdout
        return 0
    configure_logging(args.log_level or settings.agent.log_level)
    return run_agent(settings, handlers, document_gate=document_gate)


if __name__ == "__main__":
    sys.exit(main())
