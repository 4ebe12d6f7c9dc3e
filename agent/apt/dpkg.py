"""dpkg's lock and repair, for the APT worker: wait for a lock (saying who holds it), take and
release the dpkg system lock, replay an interrupted dpkg's journal, ``dpkg --configure -a``.

unattended-upgrades keeps the same concern apart (its lock context manager; the lock message
caught at the boundary). A lock is never broken and lock files are never deleted: the worker
waits, up to ``[apt] lock_timeout_seconds``, and names the holder.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import apt.cache
import apt_pkg

from agent.apt.inhibit import shutdown_delayed
from agent.apt.protocol import BROKEN, LOCK_TIMEOUT, NONINTERACTIVE_ENVIRONMENT, WorkerFailure

log = logging.getLogger("agent.apt.worker")

DPKG_REPAIR_OPTIONS = ("--force-confdef", "--force-confold", "--configure", "-a")
LOCK_ERROR = re.compile(r"Could not get lock|Unable to acquire|Unable to lock|Failed to lock")
LOCK_HOLDER = re.compile(r"held by process (\d+)(?: \(([^)]*)\))?")
LOG_TAIL_LINES = 15
LOCK_LOG_SECONDS = 30.0  # while a job waits for a lock, the log says so this often
# Package states dpkg --configure -a finishes (apt's pkgCache::State::PkgCurrentState).
UNPACKED, HALF_CONFIGURED, TRIGGERS_AWAITED, TRIGGERS_PENDING = 1, 2, 7, 8
PENDING_STATES = (UNPACKED, HALF_CONFIGURED, TRIGGERS_AWAITED, TRIGGERS_PENDING)
STATE_NAMES = {
    UNPACKED: "unpacked",
    HALF_CONFIGURED: "half-configured",
    TRIGGERS_AWAITED: "triggers-awaited",
    TRIGGERS_PENDING: "triggers-pending",
}
PENDING_STATE_WORDS = frozenset(STATE_NAMES.values())  # as dpkg's status file spells them

Emit = Callable[[Dict[str, str], bool], None]


def admin_dir() -> Path:
    """dpkg's database folder (``/var/lib/dpkg`` in the configured root)."""
    return Path(apt_pkg.config.find_file("Dir::State::status")).parent


def state_stamp(root_dir: Optional[str]) -> Tuple[Any, ...]:
    """What changes whenever dpkg's or apt's state does: dpkg's status file and journal, apt's
    extended states and package lists (a file's inode, time and size; the journal's entries).

    Taken before the cache is read and again once the lock is held: when they differ, another
    package manager ran meanwhile and the cache is read again.
    """
    if root_dir is not None:  # as apt.Cache(rootdir=) configures apt
        root = Path(root_dir)
        status, states, lists = (
            root / "var/lib/dpkg/status",
            root / "var/lib/apt/extended_states",
            root / "var/lib/apt/lists",
        )
    else:
        status = Path(apt_pkg.config.find_file("Dir::State::status"))
        states = Path(apt_pkg.config.find_file("Dir::State::extended_states"))
        lists = Path(apt_pkg.config.find_dir("Dir::State::Lists"))
    journal = status.parent / "updates"
    try:
        entries: Tuple[str, ...] = tuple(sorted(os.listdir(journal)))
    except OSError:
        entries = ()
    return (*(_file_stamp(path) for path in (status, states, lists, journal)), entries)


def _file_stamp(path: Path) -> Optional[Tuple[int, int, int]]:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def wait_for_lock(
    attempt: Callable[[], Any],
    lock_file: Path,
    timeout_seconds: float,
    emit: Emit,
    check_stop: Callable[[str], None],
) -> Any:
    """Call ``attempt`` until it does not fail on a lock, or ``timeout_seconds`` pass.

    Reports who holds the lock while waiting (``waiting_for_lock`` progress). Raises
    WorkerFailure(LOCK_TIMEOUT), the attempt's own non-lock error, or what ``check_stop``
    raises when the job is to stop.
    """
    started = time.monotonic()
    deadline = started + timeout_seconds
    delay = 0.05
    logged_at: Optional[float] = None
    while True:
        try:
            return attempt()
        except (SystemError, apt.cache.LockFailedException) as error:
            text = str(error)
            if not LOCK_ERROR.search(text):
                raise
            holder = lock_holder(text, lock_file)
            waited = time.monotonic() - started
            if lock_log_due(logged_at, waited):
                logged_at = waited
                log.info(
                    "waiting for %s, held by %s (%.0f s so far, up to %g s)",
                    lock_file,
                    holder,
                    waited,
                    timeout_seconds,
                )
            if time.monotonic() >= deadline:
                raise WorkerFailure(
                    LOCK_TIMEOUT,
                    f"{lock_file} is held by {holder}; gave up after {waited:.0f}s "
                    f"([apt] lock_timeout_seconds = {timeout_seconds:g})",
                    {"lockHolder": holder},
                ) from None
            emit(
                {
                    "phase": "waiting_for_lock",
                    "lockHolder": holder,
                    "lock": str(lock_file),
                    "waitedSeconds": str(int(waited)),
                },
                False,
            )
            check_stop("while waiting for the dpkg lock")
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)


def lock_log_due(logged_at: Optional[float], waited: float) -> bool:
    """Say that a job waits for a lock at once, then every LOCK_LOG_SECONDS (pure)."""
    return logged_at is None or waited - logged_at >= LOCK_LOG_SECONDS


class DpkgLock:
    """The dpkg system lock (frontend + admin) held for one transaction.

    ``repair(what)`` runs ``dpkg --configure -a`` (see ``run_repair``) for ``take`` when dpkg
    was interrupted.
    """

    def __init__(
        self,
        timeout_seconds: float,
        emit: Emit,
        check_stop: Callable[[str], None],
        repair: Callable[[List[str]], str],
    ) -> None:
        self._timeout = timeout_seconds
        self._emit = emit
        self._check_stop = check_stop
        self._repair = repair
        self.held = False

    def _wait(self, attempt: Callable[[], Any], lock_file: Path) -> Any:
        return wait_for_lock(attempt, lock_file, self._timeout, self._emit, self._check_stop)

    def take(self) -> bool:
        """Take the lock, waiting up to the lock timeout. Returns True when an interrupted
        dpkg's journal was replayed first.

        A dpkg that was interrupted (journal not empty) makes apt refuse the lock: then the
        journal is replayed under the frontend lock alone, and the lock taken again.
        """
        frontend = admin_dir() / "lock-frontend"
        replayed = False
        try:
            self._wait(apt_pkg.pkgsystem_lock, frontend)
        except SystemError as error:
            if "dpkg was interrupted" not in str(error):
                raise WorkerFailure(BROKEN, f"cannot lock the dpkg database: {error}") from None
            log_tail = self._replay_journal(frontend)
            replayed = True
            try:
                self._wait(apt_pkg.pkgsystem_lock, frontend)
            except SystemError as again:
                raise WorkerFailure(
                    BROKEN,
                    f"dpkg was interrupted and 'dpkg --configure -a' did not repair it: {again}",
                    {"log": log_tail},
                ) from None
        self.held = True
        return replayed

    def release(self) -> None:
        if self.held:
            apt_pkg.pkgsystem_unlock()
            self.held = False

    def repair_inner(self, pending: List[str]) -> None:
        """``dpkg --configure -a`` for ``pending`` while the lock is held: dpkg takes the admin
        lock itself, the frontend lock stays with this process."""
        apt_pkg.pkgsystem_unlock_inner()
        try:
            self._repair(pending)
        finally:
            apt_pkg.pkgsystem_lock_inner()

    def _replay_journal(self, frontend: Path) -> str:
        """Replay dpkg's journal holding only the frontend lock (dpkg takes its own)."""
        descriptor = self._wait(lambda: apt_pkg.get_lock(str(frontend), True), frontend)
        try:
            return self._repair(["the interrupted run"])
        finally:
            os.close(descriptor)


def dpkg_states(names: Optional[Iterable[str]] = None) -> Dict[str, Tuple[str, str]]:
    """What dpkg's status file says of ``names`` (every package it lists when None):
    name -> (version, state word: installed, unpacked, half-configured, config-files, ...).

    Read straight from the status file, which lists only the packages dpkg knows (a few
    hundred to a few thousand on a device), instead of opening the apt cache again or walking
    its 60,000 packages in Python on a device with the full Debian lists. Foreign-architecture
    packages are named ``name:arch``, as python-apt names them.
    """
    wanted = None if names is None else set(names)
    native = apt_pkg.config.find("APT::Architecture")
    found: Dict[str, Tuple[str, str]] = {}
    with apt_pkg.TagFile(apt_pkg.config.find_file("Dir::State::status")) as stanzas:
        for stanza in stanzas:
            name = stanza.get("Package", "")
            architecture = stanza.get("Architecture", "all")
            if architecture not in ("all", native):
                name = f"{name}:{architecture}"
            if wanted is not None and name not in wanted:
                continue
            words = stanza.get("Status", "").split()
            found[name] = (stanza.get("Version", ""), words[-1] if words else "not-installed")
    return found


def pending_packages() -> Dict[str, str]:
    """Packages dpkg left unpacked, half-configured or waiting for triggers: name -> state."""
    return {
        name: state
        for name, (_version, state) in sorted(dpkg_states().items())
        if state in PENDING_STATE_WORDS
    }


def run_repair(pending: List[str], log_path: Path, emit: Emit) -> Tuple[int, str]:
    """Run ``dpkg --configure -a`` non-interactively (the frontend lock held by the caller);
    returns (exit status, the log's tail). The log is copied to the worker's log."""
    dpkg = apt_pkg.config.find_file("Dir::Bin::dpkg", "/usr/bin/dpkg")
    emit({"phase": "repairing_dpkg"}, True)
    log.info("dpkg was interrupted (%s): running %s --configure -a", ", ".join(pending), dpkg)
    environment = dict(os.environ, DPKG_FRONTEND_LOCKED="1", **NONINTERACTIVE_ENVIRONMENT)
    with open(log_path, "wb") as output, shutdown_delayed("dpkg --configure -a runs"):
        status = subprocess.run(
            [dpkg, *DPKG_REPAIR_OPTIONS],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            check=False,
        ).returncode
    return status, relay_log(log_path)


def relay_log(path: Path) -> str:
    """Copy a dpkg log to stderr (the agent's log) and return its tail."""
    text = path.read_text(errors="replace")
    for line in text.splitlines():
        log.info("dpkg: %s", line)
    return "\n".join(text.strip().splitlines()[-LOG_TAIL_LINES:])


def lock_holder(error_text: str, lock_file: Path) -> str:
    """Who holds ``lock_file``: from apt's message, else from /proc/locks; "pid N (name)"."""
    match = LOCK_HOLDER.search(error_text)
    if match:
        pid, name = match.group(1), match.group(2)
        return f"pid {pid} ({name or _process_name(pid)})"
    pid = _lock_owner_from_proc(lock_file)
    if pid is None:
        return "an unknown process"
    return f"pid {pid} ({_process_name(pid)})"


def _lock_owner_from_proc(lock_file: Path) -> Optional[str]:
    try:
        inode = os.stat(lock_file).st_ino
        with open("/proc/locks") as stream:
            lines = stream.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        if len(fields) >= 6 and fields[5].rsplit(":", 1)[-1] == str(inode):
            return fields[4]
    return None


def _process_name(pid: str) -> str:
    try:
        with open(f"/proc/{int(pid)}/comm") as stream:
            return stream.read().strip() or "unknown"
    except (OSError, ValueError):
        return "unknown"
