"""``python -m agent.apt.worker``: one apt transaction in a fresh single-threaded process: an
APT_UPDATE install (``Transaction``) or a Remove-Application removal (``Removal``).

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
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Tuple

import apt
import apt.cache
import apt.progress.base
import apt_pkg

from agent.apt.document import PackageRequest
from agent.apt.progress import AcquireReporter, InstallReporter, Throttle
from agent.apt.protocol import (
    BROKEN,
    CANCELED,
    DOWNGRADE,
    DOWNLOAD_FAILED,
    ESSENTIAL,
    HELD,
    INSTALL_FAILED,
    LOCK_TIMEOUT,
    NO_SPACE,
    NOT_FOUND,
    OTHER_CHANGES,
    REMOVALS,
    REMOVE,
    REMOVE_FAILED,
    UNTRUSTED,
    VERSION_NOT_FOUND,
    WorkerConfig,
)

log = logging.getLogger("agent.apt.worker")

NONINTERACTIVE_ENVIRONMENT = {
    "DEBIAN_FRONTEND": "noninteractive",
    "DEBIAN_PRIORITY": "critical",
    "NEEDRESTART_MODE": "a",
    "NEEDRESTART_SUSPEND": "1",
    "APT_LISTCHANGES_FRONTEND": "none",
    "UCF_FORCE_CONFFOLD": "1",
    "LC_ALL": "C.UTF-8",
}
DPKG_REPAIR_OPTIONS = ("--force-confdef", "--force-confold", "--configure", "-a")
LISTS_STAMP = "periodic/update-success-stamp"  # under Dir::State, as apt's daily job keeps it
LOCK_ERROR = re.compile(r"Could not get lock|Unable to acquire|Unable to lock|Failed to lock")
LOCK_HOLDER = re.compile(r"held by process (\d+)(?: \(([^)]*)\))?")
LOG_TAIL_LINES = 15
# Package states dpkg --configure -a finishes (apt's pkgCache::State::PkgCurrentState).
UNPACKED, HALF_CONFIGURED, TRIGGERS_AWAITED, TRIGGERS_PENDING = 1, 2, 7, 8


class WorkerFailure(Exception):
    """The transaction cannot go on: an error code, a reason and extra details."""

    def __init__(self, code: str, reason: str, details: Optional[Dict[str, str]] = None):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.details = dict(details or {})


@dataclass
class Target:
    """A requested package resolved in the cache."""

    request: PackageRequest
    name: str
    before: Optional[str]
    version: str

    @property
    def result(self) -> str:
        if self.before is None:
            return "installed"
        if self.before == self.version:
            return "already-installed"
        newer = apt_pkg.version_compare(self.version, self.before) > 0
        return "upgraded" if newer else "downgraded"


class Transaction:
    """The APT_UPDATE steps on one apt cache, each a small method; ``run`` calls them in order.

    ``emit(details, force)`` sends a progress event; ``stopping()`` says a stop was asked for.
    """

    audit_name = "APT_UPDATE"  # how apt's history.log names the job
    hold_advice = "set allowHeldChange to change it"

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
        self.targets: List[Target] = []
        self.other_changes: List[str] = []
        self.log_tail = ""
        self._unresolved: List[WorkerFailure] = []
        self._locked = False

    # -- the sequence -------------------------------------------------------------------

    def run(self) -> Dict[str, Any]:
        """Do the whole transaction; return the result value. Raises WorkerFailure."""
        self.configure_apt()
        self.open_cache()
        if not self.request.dry_run:
            self.lock_dpkg()
        try:
            self.repair_dpkg()
            return self.carry_out()
        finally:
            self.unlock_dpkg()

    def carry_out(self) -> Dict[str, Any]:
        """The steps after locking and repairing dpkg: resolve, check, download, install."""
        self.refresh_lists()
        self.resolve()
        if self._unresolved and self.request.refresh_lists is None:
            # Lists young enough by age can still predate a just-published package.
            self.refresh_lists(force=True)
            self.resolve()
        self.raise_missing_targets()
        self.mark()
        self.check_plan()
        self.check_space()
        if self.request.dry_run:
            return self.result()
        if not self._changes():
            self.verify()
            return self.result()
        self.check_stop("before downloading")
        downloaded = self.download()
        self.check_stop("before installing (nothing was installed)")
        self.install()
        self.verify()
        self.remove_archives(downloaded)
        return self.result()

    def configure_apt(self) -> None:
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
        config.set(
            "Commandline::AsString", f"jobs-agent {self.audit_name} job={self.config.job_id}"
        )

    def open_cache(self) -> None:
        """Open the apt cache (of ``root_dir`` when set), without locks."""

        self.emit({"phase": "opening_cache"}, True)
        try:
            self.cache = apt.Cache(rootdir=self.config.root_dir)
        except SystemError as error:
            raise WorkerFailure(BROKEN, f"apt cannot read its package database: {error}") from None

    def lock_dpkg(self) -> None:
        """Take the dpkg lock (frontend + admin), waiting up to the lock timeout.

        A dpkg that was interrupted (journal not empty) makes apt refuse the lock: then the
        journal is replayed under the frontend lock alone, and the lock taken again.
        """
        try:
            self._wait_for_lock(apt_pkg.pkgsystem_lock, self._admin_dir / "lock-frontend")
        except SystemError as error:
            if "dpkg was interrupted" not in str(error):
                raise WorkerFailure(BROKEN, f"cannot lock the dpkg database: {error}") from None
            self._repair_interrupted_journal()
            self.cache.open(None)
            try:
                self._wait_for_lock(apt_pkg.pkgsystem_lock, self._admin_dir / "lock-frontend")
            except SystemError as again:
                raise WorkerFailure(
                    BROKEN,
                    f"dpkg was interrupted and 'dpkg --configure -a' did not repair it: {again}",
                    {"log": self.log_tail},
                ) from None
        self._locked = True

    def unlock_dpkg(self) -> None:
        if self._locked:
            apt_pkg.pkgsystem_unlock()
            self._locked = False

    def repair_dpkg(self) -> None:
        """Finish packages dpkg left unpacked or half-configured (``dpkg --configure -a``)."""
        pending = [
            package.name
            for package in self.cache._cache.packages
            if package.current_state
            in (UNPACKED, HALF_CONFIGURED, TRIGGERS_AWAITED, TRIGGERS_PENDING)
        ]
        if self.request.dry_run and self.cache.dpkg_journal_dirty:
            self.notes.append("dpkg was interrupted: a real run repairs it first")
        if not pending:
            return
        if self.request.dry_run:
            self.notes.append(f"dpkg needs 'dpkg --configure -a' for {', '.join(pending[:5])}")
            return
        apt_pkg.pkgsystem_unlock_inner()
        try:
            self._run_dpkg_repair(pending)
        finally:
            apt_pkg.pkgsystem_lock_inner()
        self.cache.open(None)

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
            self._wait_for_lock(
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

    def resolve(self) -> None:
        """Find each requested package and its target version in the cache."""
        self.targets = []
        self._unresolved = []
        for package in self.request.packages:
            try:
                self.targets.append(self._resolve_one(package))
            except WorkerFailure as failure:
                self._unresolved.append(failure)

    def raise_missing_targets(self) -> None:
        if self._unresolved:
            failure = self._unresolved[0]
            if self.lists_refreshed == "failed":
                failure.reason += " (refreshing the package lists failed)"
            raise failure

    def mark(self) -> None:
        """Check holds and downgrades of the requested packages, mark them, resolve.

        Raises WorkerFailure(BROKEN) when apt cannot install a requested package: resolving
        must not quietly keep it back.
        """
        changing = [target for target in self.targets if target.before != target.version]
        with self.cache.actiongroup():
            for target in changing:
                package = self.cache[target.name]
                self._check_hold(package, target)
                self._check_downgrade(target)
                package.candidate = package.versions[target.version]
                package.mark_install(auto_fix=False, auto_inst=True, from_user=True)
            if self.cache.broken_count:
                self._resolve_problems(changing)
        for target in changing:
            package = self.cache[target.name]
            if not (package.marked_install or package.marked_upgrade or package.marked_downgrade):
                raise WorkerFailure(
                    BROKEN,
                    f"apt cannot install {target.name} {target.version}: "
                    f"{_unmet_dependencies(package.versions[target.version])}",
                    {"package": target.name},
                )

    def _resolve_problems(self, changing: List[Target]) -> None:
        """apt's problem resolver, the requested packages protected (removals are checked
        after, in check_plan)."""
        reason = self._broken_reason()
        resolver = apt_pkg.ProblemResolver(self.cache._depcache)
        for target in changing:
            low_level = self.cache[target.name]._pkg
            resolver.clear(low_level)
            resolver.protect(low_level)
        try:
            resolver.resolve(True)
        except SystemError:
            raise WorkerFailure(BROKEN, reason) from None
        if self.cache.broken_count:
            raise WorkerFailure(BROKEN, reason)

    def check_plan(self) -> None:
        """Refuse plans apt-get -y would refuse: removals, broken, hidden downgrades, holds,
        untrusted origins."""
        requested = {target.name for target in self.targets}
        if self.cache.broken_count:
            raise WorkerFailure(BROKEN, self._broken_reason())
        removals = [package.name for package in self.cache.get_changes() if package.marked_delete]
        if removals:
            raise WorkerFailure(
                REMOVALS,
                f"installing would remove {', '.join(sorted(removals))}; removals are never done "
                "by APT_UPDATE jobs",
                {"removals": ", ".join(sorted(removals))},
            )
        untrusted = []
        for package in self.cache.get_changes():
            if package.name in requested:
                pass  # checked against the request in mark()
            elif package.marked_downgrade and not self.request.allow_downgrade:
                raise WorkerFailure(
                    DOWNGRADE,
                    f"the plan downgrades {package.name} from {package.installed.version} to "
                    f"{package.candidate.version}; set allowDowngrade to allow it",
                )
            elif (
                package.installed is not None
                and package._pkg.selected_state == apt_pkg.SELSTATE_HOLD
                and not self.request.allow_held_change
            ):
                raise WorkerFailure(
                    HELD,
                    f"the plan changes {package.name}, which is held; set allowHeldChange "
                    "to allow it",
                    {"held": package.name},
                )
            candidate = package.candidate
            if candidate is not None and not any(origin.trusted for origin in candidate.origins):
                untrusted.append(f"{package.name} {candidate.version}")
            if package.name not in requested:
                before = package.installed.version if package.installed else "none"
                self.other_changes.append(f"{package.name}={before}->{candidate.version}")
        if untrusted:
            raise WorkerFailure(
                UNTRUSTED,
                f"not from a trusted (signed) source: {', '.join(untrusted)}",
            )

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
            self._wait_for_lock(fetch, archives / "lock")
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

    def install(self, phase: str = "installing", failure_code: str = INSTALL_FAILED) -> None:
        """Run dpkg through python-apt, non-interactively; archives are already downloaded.

        Raises WorkerFailure(``failure_code``) with dpkg's errors when dpkg fails.
        """
        log_path = self.work_dir / "dpkg.log"
        with open(log_path, "ab") as dpkg_log:
            install_progress = InstallReporter(self.emit, dpkg_log.fileno(), phase)
            try:
                # Archives are downloaded already: commit's own fetch step only checks them.
                self.cache.commit(
                    fetch_progress=apt.progress.base.AcquireProgress(),
                    install_progress=install_progress,
                    allow_unauthenticated=False,
                )
                failure = None
            except SystemError as error:
                failure = str(error)
        self.log_tail = self._relay_log(log_path)
        if install_progress.conffiles:
            self.notes.append("kept the local version of " + ", ".join(install_progress.conffiles))
        if failure is not None:
            messages = "; ".join(install_progress.errors) or failure
            raise WorkerFailure(failure_code, f"dpkg failed: {messages}", {"log": self.log_tail})

    def verify(self) -> None:
        """Re-read dpkg's database: every requested package must be installed at its target."""
        self.emit({"phase": "verifying"}, True)
        self.cache.open(None)
        for target in self.targets:
            package = self.cache[target.name]
            installed = package.installed.version if package.installed else None
            state = package._pkg.current_state
            if installed != target.version or state != apt_pkg.CURSTATE_INSTALLED:
                raise WorkerFailure(
                    INSTALL_FAILED,
                    f"after the install dpkg reports {target.name} at {installed or 'none'} "
                    f"(state {state}), expected {target.version} installed",
                    {"log": self.log_tail},
                )

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

    def result(self) -> Dict[str, Any]:
        """The outcome as a JSON-ready value (the handler turns it into statusDetails)."""
        dry_run = self.request.dry_run
        return {
            "packages": [
                {
                    "name": target.name,
                    "before": target.before,
                    "after": target.before if dry_run else target.version,
                    "target": target.version,
                    "result": "dry-run" if dry_run and target.result != "already-installed"
                    else target.result,
                }
                for target in self.targets
            ],
            "otherChanges": self.other_changes,
            "rebootRequired": self._reboot_required(),
            **self.state(),
        }

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

    # -- helpers ------------------------------------------------------------------------

    @property
    def _admin_dir(self) -> Path:
        return Path(apt_pkg.config.find_file("Dir::State::status")).parent

    @property
    def _lists_dir(self) -> Path:
        return Path(apt_pkg.config.find_dir("Dir::State::Lists"))

    def _acquire_progress(self, phase: str):

        return AcquireReporter(phase, self.emit, self.stopping)

    def _wait_for_lock(self, attempt: Callable[[], Any], lock_file: Path) -> Any:
        """Call ``attempt`` until it does not fail on a lock, or the lock timeout passes.

        Reports who holds the lock while waiting. Raises WorkerFailure(LOCK_TIMEOUT), or the
        attempt's own non-lock error.
        """

        started = time.monotonic()
        deadline = started + self.config.lock_timeout_seconds
        delay = 0.05
        while True:
            try:
                return attempt()
            except (SystemError, apt.cache.LockFailedException) as error:
                text = str(error)
                if not LOCK_ERROR.search(text):
                    raise
                holder = lock_holder(text, lock_file)
                waited = time.monotonic() - started
                if time.monotonic() >= deadline:
                    raise WorkerFailure(
                        LOCK_TIMEOUT,
                        f"{lock_file} is held by {holder}; gave up after {waited:.0f}s "
                        f"([apt] lock_timeout_seconds = {self.config.lock_timeout_seconds:g})",
                        {"lockHolder": holder},
                    ) from None
                self.emit(
                    {
                        "phase": "waiting_for_lock",
                        "lockHolder": holder,
                        "lock": str(lock_file),
                        "waitedSeconds": str(int(waited)),
                    },
                    False,
                )
                self.check_stop("while waiting for the dpkg lock")
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 1.0)

    def _repair_interrupted_journal(self) -> None:
        """Replay dpkg's journal holding only the frontend lock (dpkg takes its own)."""
        if self.request.dry_run:
            return
        frontend = self._admin_dir / "lock-frontend"
        descriptor = self._wait_for_lock(lambda: apt_pkg.get_lock(str(frontend), True), frontend)
        try:
            self._run_dpkg_repair(["the interrupted run"])
        finally:
            os.close(descriptor)

    def _run_dpkg_repair(self, pending: List[str]) -> None:
        dpkg = apt_pkg.config.find_file("Dir::Bin::dpkg", "/usr/bin/dpkg")
        self.emit({"phase": "repairing_dpkg"}, True)
        log.info("dpkg was interrupted (%s): running %s --configure -a", ", ".join(pending), dpkg)
        environment = dict(os.environ, DPKG_FRONTEND_LOCKED="1", **NONINTERACTIVE_ENVIRONMENT)
        log_path = self.work_dir / "dpkg-repair.log"
        with open(log_path, "wb") as output:
            status = subprocess.run(
                [dpkg, *DPKG_REPAIR_OPTIONS],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=environment,
                check=False,
            ).returncode
        self.log_tail = self._relay_log(log_path)
        if status == 0:
            self.dpkg_repaired = "true"
        else:
            self.dpkg_repaired = "failed"
            self.notes.append(f"'dpkg --configure -a' exited {status}: {_last_line(self.log_tail)}")

    def _resolve_one(self, package: PackageRequest) -> Target:
        cache = self.cache
        name = package.name
        if name not in cache:
            if cache.is_virtual_package(name):
                providers = sorted(p.name for p in cache.get_providing_packages(name))
                raise WorkerFailure(
                    NOT_FOUND,
                    f"{name!r} is a virtual package provided by {', '.join(providers)}; "
                    "name one of them",
                    {"package": name},
                )
            raise WorkerFailure(
                NOT_FOUND, f"package {name!r} is not in the package lists", {"package": name}
            )
        pkg = cache[name]
        before = pkg.installed.version if pkg.installed is not None else None
        if package.version is not None:
            if package.version not in pkg.versions:
                known = ", ".join(v.version for v in pkg.versions) or "none"
                raise WorkerFailure(
                    VERSION_NOT_FOUND,
                    f"{name} has no version {package.version!r} (known: {known})",
                    {"package": name},
                )
            version = pkg.versions[package.version]
        else:
            version = pkg.candidate
            if version is None:
                raise WorkerFailure(
                    NOT_FOUND, f"package {name!r} has no installable version", {"package": name}
                )
        if not version.downloadable and version.version != before:
            raise WorkerFailure(
                VERSION_NOT_FOUND,
                f"{name} {version.version} is known but no source offers it for download",
                {"package": name},
            )
        return Target(package, pkg.name, before, version.version)

    def _check_hold(self, package: Any, target: Any) -> None:
        held = package._pkg.selected_state == apt_pkg.SELSTATE_HOLD
        if held and not self.request.allow_held_change:
            raise WorkerFailure(
                HELD,
                f"{target.name} is held at {target.before} (dpkg --set-selections / apt-mark "
                f"hold); {self.hold_advice}",
                {"package": target.name},
            )

    def _check_downgrade(self, target: Target) -> None:
        if target.result == "downgraded" and not self.request.allow_downgrade:
            raise WorkerFailure(
                DOWNGRADE,
                f"{target.name} {target.version} is older than the installed {target.before}; "
                "set allowDowngrade to downgrade",
                {"package": target.name},
            )

    def _changes(self) -> bool:
        return bool(self.cache.get_changes())

    def _broken_reason(self) -> str:
        problems = []
        depcache = self.cache._depcache
        for low_level in self.cache._cache.packages:
            if depcache.marked_install(low_level) and depcache.is_inst_broken(low_level):
                package = self.cache[low_level.get_fullname(True)]
                problems.append(f"{package.name}: {_unmet_dependencies(package.candidate)}")
        return "dependencies cannot be satisfied: " + "; ".join(problems[:5])

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

    def _reboot_required(self) -> bool:
        root = Path(self.config.root_dir or "/")
        flags = ("run/reboot-required", "var/run/reboot-required")
        return any((root / flag).exists() for flag in flags)

    def _relay_log(self, path: Path) -> str:
        """Copy a dpkg log to stderr (the agent's log) and return its tail."""
        text = path.read_text(errors="replace")
        for line in text.splitlines():
            log.info("dpkg: %s", line)
        return "\n".join(text.strip().splitlines()[-LOG_TAIL_LINES:])


@dataclass
class Removed:
    """A package named for removal, resolved in the cache (``before`` None: not installed)."""

    request: PackageRequest
    name: str
    before: Optional[str]
    known: bool = True


class Removal(Transaction):
    """Remove-Application: remove the named packages and nothing else.

    The same lock wait, dpkg repair, non-interactive dpkg and dry run as an install. A package
    that is not installed is reported ``not-installed`` (so a job run twice converges). Refused
    (nothing is removed): an Essential or Priority required package (ESSENTIAL), a held one
    (HELD), a removal that would also remove packages the job did not name (REMOVALS, naming
    them) or change any other package (OTHER_CHANGES). Configuration files are kept (no purge),
    and dependencies nobody needs any more stay installed (no autoremove).
    """

    audit_name = "Remove-Application"
    hold_advice = "a held package is not removed: take it off hold first"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.removals: List[Removed] = []

    def carry_out(self) -> Dict[str, Any]:
        """The steps after locking and repairing dpkg: resolve, check, remove, verify."""
        self.resolve()
        self.mark()
        self.check_plan()
        if self.request.dry_run or not self._changes():
            return self.result()
        self.check_stop("before removing (nothing was removed)")
        self.install(phase="removing", failure_code=REMOVE_FAILED)
        self.verify()
        return self.result()

    def resolve(self) -> None:
        """Find each named package; note the ones apt does not know (not installed either)."""
        self.removals = []
        for package in self.request.packages:
            name = package.name
            if name in self.cache:
                pkg = self.cache[name]
                before = pkg.installed.version if pkg.installed is not None else None
                self.removals.append(Removed(package, pkg.name, before))
                continue
            providers = (
                sorted(p.name for p in self.cache.get_providing_packages(name) if p.is_installed)
                if self.cache.is_virtual_package(name)
                else []
            )
            if providers:
                raise WorkerFailure(
                    NOT_FOUND,
                    f"{name!r} is a virtual package provided by the installed "
                    f"{', '.join(providers)}; name the package to remove",
                    {"package": name},
                )
            self.notes.append(f"{name} is unknown to apt (not installed)")
            self.removals.append(Removed(package, name, None, known=False))

    def mark(self) -> None:
        """Refuse essential and held packages, then mark the installed ones for deletion.

        When that breaks other packages, apt's problem resolver (the named packages protected)
        finds what would have to go with them, for check_plan to name.
        """
        installed = [removed for removed in self.removals if removed.before is not None]
        for removed in installed:
            package = self.cache[removed.name]
            if _is_essential(package):
                raise WorkerFailure(
                    ESSENTIAL,
                    f"{removed.name} is {_essential_kind(package)}; the system needs it, so it "
                    "is never removed by a job",
                    {"package": removed.name},
                )
            self._check_hold(package, removed)
        with self.cache.actiongroup():
            for removed in installed:
                self.cache[removed.name].mark_delete(auto_fix=False, purge=False)
            if self.cache.broken_count:
                self._find_dependents(installed)

    def _find_dependents(self, installed: List[Removed]) -> None:
        resolver = apt_pkg.ProblemResolver(self.cache._depcache)
        for removed in installed:
            low_level = self.cache[removed.name]._pkg
            resolver.clear(low_level)
            resolver.protect(low_level)
            resolver.remove(low_level)
        try:
            resolver.resolve(True)
        except SystemError:
            pass  # the packages left broken are named below
        if self.cache.broken_count:
            broken = self._broken_installed()
            essential = [name for name in broken if _is_essential(self.cache[name])]
            if essential:
                raise WorkerFailure(
                    ESSENTIAL,
                    f"removing {_names(installed)} would break {', '.join(essential)}, which "
                    "the system needs (Essential or Priority required); nothing was removed",
                    {"removals": ", ".join(broken)},
                )
            raise WorkerFailure(
                REMOVALS,
                f"removing {_names(installed)} would break {', '.join(broken)} (depending on "
                "it), and apt cannot remove those with it; nothing was removed",
                {"removals": ", ".join(broken)},
            )

    def check_plan(self) -> None:
        """Only the named packages are removed: nothing essential, nothing else."""
        named = {removed.name for removed in self.removals}
        changes = self.cache.get_changes()
        deleted = sorted(package.name for package in changes if package.marked_delete)
        essential = sorted(
            package.name for package in changes if package.marked_delete and _is_essential(package)
        )
        if essential:
            raise WorkerFailure(
                ESSENTIAL,
                f"removing {_names(self.removals)} would remove {', '.join(essential)}, which "
                "the system needs; nothing was removed",
                {"removals": ", ".join(deleted)},
            )
        extra = [name for name in deleted if name not in named]
        if extra:
            raise WorkerFailure(
                REMOVALS,
                f"removing {_names(self.removals)} would also remove {', '.join(extra)} "
                "(they depend on it); nothing was removed: name them in the job too to remove "
                "them",
                {"removals": ", ".join(extra)},
            )
        other = sorted(package.name for package in changes if not package.marked_delete)
        if other:
            raise WorkerFailure(
                OTHER_CHANGES,
                f"removing {_names(self.removals)} would also install or change "
                f"{', '.join(other)}; a removal changes nothing else",
                {"otherChanges": ", ".join(other)},
            )

    def verify(self) -> None:
        """Re-read dpkg's database: no named package may still be installed."""
        self.emit({"phase": "verifying"}, True)
        self.cache.open(None)
        for removed in self.removals:
            if removed.before is None or removed.name not in self.cache:
                continue
            package = self.cache[removed.name]
            state = package._pkg.current_state
            if package.installed is not None or state not in (
                apt_pkg.CURSTATE_NOT_INSTALLED,
                apt_pkg.CURSTATE_CONFIG_FILES,
            ):
                raise WorkerFailure(
                    REMOVE_FAILED,
                    f"after the removal dpkg reports {removed.name} still installed "
                    f"(state {state})",
                    {"log": self.log_tail},
                )

    def result(self) -> Dict[str, Any]:
        """The outcome as a JSON-ready value (the handler turns it into statusDetails)."""
        dry_run = self.request.dry_run
        packages = []
        for removed in self.removals:
            if removed.before is None:
                outcome = "not-installed"
            else:
                outcome = "dry-run" if dry_run else "removed"
            packages.append(
                {
                    "name": removed.name,
                    "before": removed.before,
                    "after": removed.before if dry_run else None,
                    "target": None,
                    "result": outcome,
                }
            )
        return {
            "packages": packages,
            "otherChanges": [],
            "rebootRequired": self._reboot_required(),
            **self.state(),
        }

    def _broken_installed(self) -> List[str]:
        depcache = self.cache._depcache
        return sorted(
            low_level.get_fullname(True)
            for low_level in self.cache._cache.packages
            if low_level.current_ver is not None and depcache.is_inst_broken(low_level)
        )


def _is_essential(package: Any) -> bool:
    """Essential: yes, or Priority: required, as dpkg records the installed package."""
    installed = package.installed
    return bool(package.essential) or (installed is not None and installed.priority == "required")


def _essential_kind(package: Any) -> str:
    return "Essential" if package.essential else "of Priority required"


def _names(removals: List[Removed]) -> str:
    return ", ".join(removed.name for removed in removals)


def _unmet_dependencies(version: Any) -> str:
    """``needs missing-lib >= 1.0, ...``: dependencies of ``version`` no known version meets."""
    unmet = [
        dependency.rawstr
        for dependency in (version.dependencies if version is not None else [])
        if not dependency.target_versions
    ]
    if unmet:
        return "needs " + ", ".join(unmet) + ", which no source offers"
    return "its dependencies cannot be installed together with the installed packages"


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


def _mb(size: float) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


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
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
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
    with tempfile.TemporaryDirectory(prefix="apt-worker-") as work_dir:
        kind = Removal if config.operation == REMOVE else Transaction
        transaction = kind(config, emit, lambda: bool(stop_requested), Path(work_dir))
        try:
            result = transaction.run()
        except WorkerFailure as failure:
            details = dict(failure.details)
            if transaction.log_tail and "log" not in details:
                details["log"] = transaction.log_tail
            protocol.send(
                {
                    "event": "result",
                    "ok": False,
                    "errorCode": failure.code,
                    "reason": failure.reason,
                    "details": details,
                    "result": transaction.state(),
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
