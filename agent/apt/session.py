"""One apt session of the APT worker: the steps the install and the remove plan share.

Configure apt (non-interactive, never unauthenticated, an audit line in apt's history.log),
open the cache, hold dpkg's lock and repair an interrupted dpkg, refresh the package lists,
check free space, download, run dpkg through python-apt, and what the job did to the device
whatever its outcome (``state``). The plans (agent/apt/install.py, agent/apt/remove.py) use a
session; ``transaction`` runs one of them between taking and releasing the dpkg lock.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import apt
import apt.cache
import apt.progress.base
import apt_pkg

from agent.apt import dpkg
from agent.apt.inhibit import shutdown_delayed
from agent.apt.progress import AcquireReporter, InstallReporter
from agent.apt.protocol import (
    BROKEN,
    CANCELED,
    DOWNLOAD_FAILED,
    HELD,
    INSTALL_FAILED,
    NO_SPACE,
    NONINTERACTIVE_ENVIRONMENT,
    UNTRUSTED,
    WorkerConfig,
    WorkerFailure,
)
from agent.apt.versions import add_versions, read_versions

log = logging.getLogger("agent.apt.worker")

LISTS_STAMP = "periodic/update-success-stamp"  # under Dir::State, as apt's daily job keeps it


class AptSession:
    """The apt cache of one job and the steps both plans take on it.

    ``emit(details, force)`` sends a progress event; ``stopping()`` says a stop was asked for.
    """

    def __init__(
        self,
        config: WorkerConfig,
        emit: Callable[[Dict[str, str], bool], None],
        stopping: Callable[[], bool],
        work_dir: Path,
    ) -> None:
        self.config = config
        self.request = config.request
        self.emit = emit
        self.stopping = stopping
        self.work_dir = work_dir
        self.cache: Any = None
        self.dpkg_repaired = "false"
        self.lists_refreshed = "false"
        self.notes: List[str] = []
        self.log_tail = ""
        self._stamp: Tuple[Any, ...] = ()
        # An earlier attempt's versions before (a re-run after a crash): what results report.
        self.first_versions: Dict[str, Optional[str]] = (
            read_versions(Path(config.versions_file)) if config.versions_file else {}
        )
        self._lock = dpkg.DpkgLock(
            config.lock_timeout_seconds, emit, self.check_stop, self._repair
        )

    # -- the sequence -------------------------------------------------------------------

    def transaction(
        self, audit_name: str, carry_out: Callable[[], Dict[str, Any]]
    ) -> Dict[str, Any]:
        """Configure apt, open the cache, lock and repair dpkg, then ``carry_out()`` (a plan's
        steps) and release the lock; returns the plan's result. Raises WorkerFailure."""
        self.configure_apt(audit_name)
        self.open_cache()
        if not self.request.dry_run:
            self.lock_dpkg()
        try:
            self.repair_dpkg()
            return carry_out()
        finally:
            self._lock.release()

    def configure_apt(self, audit_name: str) -> None:
        """Non-interactive, unauthenticated never allowed, audit line in apt's history.log."""
        os.environ.update(NONINTERACTIVE_ENVIRONMENT)
        apt_pkg.init_config()
        config = apt_pkg.config
        config.set("DPkg::Options::", "--force-confdef")
        config.set("DPkg::Options::", "--force-confold")
        config.set("Dpkg::Use-Pty", "0")
        config.set("APT::Get::AllowUnauthenticated", "false")
        config.set("Acquire::AllowInsecureRepositories", "false")
        config.set("Acquire::Retries", "3")
        config.set("Acquire::http::Timeout", "30")
        config.set("Acquire::https::Timeout", "30")
        config.set("Commandline::AsString", f"jobs-agent {audit_name} job={self.config.job_id}")

    def open_cache(self) -> None:
        """Open the apt cache (of ``root_dir`` when set), without locks."""
        self.emit({"phase": "opening_cache"}, True)
        self._stamp = dpkg.state_stamp(self.config.root_dir)
        try:
            self.cache = apt.Cache(rootdir=self.config.root_dir)
        except SystemError as error:
            raise WorkerFailure(BROKEN, f"apt cannot read its package database: {error}") from None

    def lock_dpkg(self) -> None:
        """Take the dpkg lock (frontend + admin), waiting up to the lock timeout; an
        interrupted dpkg's journal is replayed on the way.

        Every decision is made from the state as it is once the lock is held: when another
        package manager changed it since the cache was read (during the wait, typically),
        the cache is read again.
        """
        replayed = self._lock.take()
        if replayed or dpkg.state_stamp(self.config.root_dir) != self._stamp:
            if not replayed:
                log.info("dpkg's state changed while this job waited: reading it again")
            self.cache.open(None)

    def repair_dpkg(self) -> None:
        """Finish packages dpkg left unpacked or half-configured (``dpkg --configure -a``)."""
        pending = list(dpkg.pending_packages())
        if self.request.dry_run and self.cache.dpkg_journal_dirty:
            self.notes.append("dpkg was interrupted: a real run repairs it first")
        if not pending:
            return
        if self.request.dry_run:
            self.notes.append(f"dpkg needs 'dpkg --configure -a' for {', '.join(pending[:5])}")
            return
        self._lock.repair_inner(pending)
        self.cache.open(None)

    def _repair(self, pending: List[str]) -> str:
        status, self.log_tail = dpkg.run_repair(
            pending, self.work_dir / "dpkg-repair.log", self.emit
        )
        if status == 0:
            self.dpkg_repaired = "true"
        else:
            self.dpkg_repaired = "failed"
            self.notes.append(f"'dpkg --configure -a' exited {status}: {_last_line(self.log_tail)}")
        return self.log_tail

    def refresh_lists(self, force: bool = False) -> None:
        """``apt-get update`` when asked, or when the lists are older than the setting.

        A failed refresh is noted and the job goes on with the lists it has.
        """
        wanted = self.request.refresh_lists
        if wanted is False or self.lists_refreshed != "false":
            return
        if wanted is None and not force:
            age = self._lists_age_seconds()
            if age is not None and age < self.config.lists_max_age_minutes * 60:
                return
        progress = self._acquire_progress("refreshing_lists")
        try:
            self.wait_for_lock(
                lambda: self.cache.update(fetch_progress=progress),
                self._lists_dir / "lock",
            )
        except (apt.cache.FetchFailedException, SystemError) as error:
            failures = "; ".join(progress.failures) or str(error)
            self.lists_refreshed = "failed"
            self.notes.append(f"refreshing the package lists failed, used the old ones: {failures}")
        else:
            self.lists_refreshed = "true"
            self._touch_lists_stamp()
        self.cache.open(None)

    def check_space(self) -> None:
        """Enough free space for the download (archives) and the install (root)?"""
        margin = self.config.min_free_space_mb * 1024 * 1024
        archives = apt_pkg.config.find_dir("Dir::Cache::Archives")
        root = self.config.root_dir or "/"
        needs = [(archives, int(self.cache.required_download), "the download")]
        needs.append((root, max(0, int(self.cache.required_space)), "the installed files"))
        if os.stat(archives).st_dev == os.stat(root).st_dev:
            needs = [(root, sum(need for _, need, _ in needs), "the download and install")]
        for folder, need, what in needs:
            free = shutil.disk_usage(folder).free
            if free < need + margin:
                raise WorkerFailure(
                    NO_SPACE,
                    f"{what} needs {_mb(need)} in {folder} plus the {_mb(margin)} margin of "
                    f"[apt] min_free_space_mb; {_mb(free)} free",
                    {"freeBytes": str(free), "neededBytes": str(need)},
                )

    def download(self) -> List[str]:
        """Fetch every archive before dpkg runs; returns the files fetched."""
        progress = self._acquire_progress("downloading")
        fetched: List[str] = []

        def fetch() -> None:
            fetcher = apt_pkg.Acquire(progress)
            self.cache.fetch_archives(fetcher=fetcher, allow_unauthenticated=False)
            fetched.extend(item.destfile for item in fetcher.items)

        try:
            archives = Path(apt_pkg.config.find_dir("Dir::Cache::Archives"))
            self.wait_for_lock(fetch, archives / "lock")
        except apt.cache.UntrustedException as error:
            raise WorkerFailure(
                UNTRUSTED, f"refused to install untrusted packages: {error}"
            ) from None
        except apt.cache.FetchCancelledException:
            raise WorkerFailure(CANCELED, "the job was stopped while downloading") from None
        except (apt.cache.FetchFailedException, SystemError) as error:
            failures = "; ".join(progress.failures) or str(error)
            raise WorkerFailure(
                DOWNLOAD_FAILED, f"downloading the packages failed: {failures}"
            ) from None
        return fetched

    def commit(
        self,
        versions_before: Dict[str, Optional[str]],
        phase: str = "installing",
        failure_code: str = INSTALL_FAILED,
    ) -> None:
        """Run dpkg through python-apt, non-interactively; archives are already downloaded.

        First the requested packages' ``versions_before`` are kept for a re-run (see
        agent/apt/versions.py), then the ``phase`` event tells the handler dpkg runs from
        here on. Raises WorkerFailure(``failure_code``) with dpkg's errors when dpkg fails.
        """
        kept_in = self.config.versions_file
        if kept_in:
            try:
                add_versions(Path(kept_in), versions_before)
            except OSError as error:
                log.warning("cannot keep the versions before in %s: %s", kept_in, error)
        self.emit({"phase": phase}, True)
        log_path = self.work_dir / "dpkg.log"
        with open(log_path, "ab") as dpkg_log:
            install_progress = InstallReporter(self.emit, dpkg_log.fileno(), phase)
            try:
                with shutdown_delayed(f"dpkg runs job {self.config.job_id}"):
                    # Archives are downloaded already: commit's own fetch step checks them.
                    self.cache.commit(
                        fetch_progress=apt.progress.base.AcquireProgress(),
                        install_progress=install_progress,
                        allow_unauthenticated=False,
                    )
                failure = None
            except SystemError as error:
                failure = str(error)
        self.log_tail = dpkg.relay_log(log_path)
        if install_progress.conffiles:
            self.notes.append("kept the local version of " + ", ".join(install_progress.conffiles))
        if failure is not None:
            messages = "; ".join(install_progress.errors) or failure
            raise WorkerFailure(failure_code, f"dpkg failed: {messages}", {"log": self.log_tail})

    def remove_archives(self, files: List[str]) -> None:
        """Delete the archives this job downloaded (small devices keep their space).

        Only files in the archives folder: a file: source hands apt its own files in place.
        """
        archives = os.path.realpath(apt_pkg.config.find_dir("Dir::Cache::Archives"))
        for path in files:
            inside = os.path.dirname(os.path.realpath(path)) == archives
            if inside and path.endswith(".deb"):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def state(self) -> Dict[str, Any]:
        """What the job did to the device whatever the outcome."""
        return {
            "dpkgRepaired": self.dpkg_repaired,
            "listsRefreshed": self.lists_refreshed,
            "notes": self.notes,
        }

    def check_stop(self, when: str) -> None:
        if self.stopping():
            raise WorkerFailure(CANCELED, f"the job was stopped {when}")

    def check_hold(self, package: Any, name: str, before: Optional[str], advice: str) -> None:
        """Refuse to change a held package (unless allowHeldChange)."""
        held = package._pkg.selected_state == apt_pkg.SELSTATE_HOLD
        if held and not self.request.allow_held_change:
            raise WorkerFailure(
                HELD,
                f"{name} is held at {before} (dpkg --set-selections / apt-mark hold); {advice}",
                {"package": name},
            )

    def changes(self) -> bool:
        """True when the plan changes anything (the depcache's counts: no walk over the
        cache's packages, which get_changes() is)."""
        depcache = self.cache._depcache
        return depcache.inst_count + depcache.del_count > 0

    def reboot_required(self) -> bool:
        root = Path(self.config.root_dir or "/")
        flags = ("run/reboot-required", "var/run/reboot-required")
        return any((root / flag).exists() for flag in flags)

    def wait_for_lock(self, attempt: Callable[[], Any], lock_file: Path) -> Any:
        """``attempt`` retried while ``lock_file`` is held (see dpkg.wait_for_lock)."""
        return dpkg.wait_for_lock(
            attempt, lock_file, self.config.lock_timeout_seconds, self.emit, self.check_stop
        )

    # -- helpers ------------------------------------------------------------------------

    @property
    def _lists_dir(self) -> Path:
        return Path(apt_pkg.config.find_dir("Dir::State::Lists"))

    def _acquire_progress(self, phase: str) -> AcquireReporter:
        return AcquireReporter(phase, self.emit, self.stopping)

    def _lists_age_seconds(self) -> Optional[float]:
        stamp = Path(apt_pkg.config.find_dir("Dir::State")) / LISTS_STAMP
        # lstat: apt keeps the lists of an uncompressed file: repository as a symlink to its
        # Packages, whose own time says when the repository changed, not when apt read it,
        # and which is left dangling when the repository goes away.
        times = [path.lstat().st_mtime for path in self._lists_dir.glob("*Packages*")]
        if stamp.exists():
            times.append(stamp.stat().st_mtime)
        if not times:
            return None
        return max(0.0, time.time() - max(times))

    def _touch_lists_stamp(self) -> None:
        stamp = Path(apt_pkg.config.find_dir("Dir::State")) / LISTS_STAMP
        try:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.touch()
        except OSError as error:
            log.warning("cannot write %s: %s", stamp, error)


def _mb(size: float) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


class Plan:
    """What an install or a removal plan shares: its session, and ``run`` (the session's
    transaction around the plan's own ``carry_out`` steps)."""

    audit_name = ""  # how apt's history.log names the job

    def __init__(self, session: AptSession) -> None:
        self.session = session
        self.request = session.request

    @property
    def cache(self) -> Any:
        return self.session.cache

    def run(self) -> Dict[str, Any]:
        """Do the whole transaction; return the result value. Raises WorkerFailure."""
        return self.session.transaction(self.audit_name, self.carry_out)

    def carry_out(self) -> Dict[str, Any]:
        raise NotImplementedError
