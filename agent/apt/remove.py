"""The Remove-Application plan: remove exactly the named packages on an apt session.

Names are only cache look-ups. Refused, with nothing removed: an Essential or Priority required
package, a held one, a removal that would take other packages with it or change anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import apt_pkg

from agent.apt import dpkg
from agent.apt.document import PackageRequest
from agent.apt.protocol import (
    ESSENTIAL,
    NOT_FOUND,
    OTHER_CHANGES,
    REMOVALS,
    REMOVE_FAILED,
    WorkerFailure,
)
from agent.apt.session import AptSession, Plan


@dataclass
class Removed:
    """A package named for removal, resolved in the cache (``before`` None: not installed)."""

    request: PackageRequest
    name: str
    before: Optional[str]
    known: bool = True


class Removal(Plan):
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

    def __init__(self, session: AptSession) -> None:
        super().__init__(session)
        self.removals: List[Removed] = []

    def carry_out(self) -> Dict[str, Any]:
        """The steps after locking and repairing dpkg: resolve, check, remove, verify."""
        self.resolve()
        self.mark()
        self.check_plan()
        if self.request.dry_run or not self.session.changes():
            return self.result()
        self.session.check_stop("before removing (nothing was removed)")
        self.session.commit(
            {removed.name: removed.before for removed in self.removals},
            phase="removing",
            failure_code=REMOVE_FAILED,
        )
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
            self.session.notes.append(f"{name} is unknown to apt (not installed)")
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
            self.session.check_hold(package, removed.name, removed.before, self.hold_advice)
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
        self.session.emit({"phase": "verifying"}, True)
        states = dpkg.dpkg_states(removed.name for removed in self.removals)
        for removed in self.removals:
            if removed.before is None or removed.name not in states:
                continue
            _version, state = states[removed.name]
            if state not in ("not-installed", "config-files"):
                raise WorkerFailure(
                    REMOVE_FAILED,
                    f"after the removal dpkg reports {removed.name} still installed "
                    f"(state {state})",
                    {"log": self.session.log_tail},
                )

    def result(self) -> Dict[str, Any]:
        """The outcome as a JSON-ready value (the handler turns it into statusDetails)."""
        dry_run = self.request.dry_run
        first = self.session.first_versions  # a re-run after a crash: the first attempt's
        packages = []
        for removed in self.removals:
            before = first.get(removed.name, removed.before)
            if before is None:
                outcome = "not-installed"
            else:
                outcome = "dry-run" if dry_run else "removed"
            packages.append(
                {
                    "name": removed.name,
                    "before": before,
                    "after": before if dry_run else None,
                    "target": None,
                    "result": outcome,
                }
            )
        return {
            "packages": packages,
            "otherChanges": [],
            "rebootRequired": self.session.reboot_required(),
            **self.session.state(),
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
