"""The APT_UPDATE plan: install or upgrade the requested packages on an apt session.

Each requested name is looked up in the cache (never an argument or an apt option), its target
version chosen (the pinned one, else the candidate), holds and downgrades checked, and the plan
refused where ``apt-get -y`` would refuse it: removals, broken dependencies, hidden
downgrades, held packages, untrusted origins. Then download, dpkg, and a read-back of dpkg's
database.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional

import apt_pkg

from agent.apt import dpkg
from agent.apt.document import PackageRequest
from agent.apt.protocol import (
    BROKEN,
    DOWNGRADE,
    HELD,
    INSTALL_FAILED,
    NOT_FOUND,
    REMOVALS,
    UNTRUSTED,
    VERSION_NOT_FOUND,
    WorkerFailure,
)
from agent.apt.session import AptSession, Plan


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


class Install(Plan):
    """The APT_UPDATE steps, each a small method; ``carry_out`` calls them in order."""

    audit_name = "APT_UPDATE"
    hold_advice = "set allowHeldChange to change it"

    def __init__(self, session: AptSession) -> None:
        super().__init__(session)
        self.targets: List[Target] = []
        self.other_changes: List[str] = []
        self._unresolved: List[WorkerFailure] = []

    def carry_out(self) -> Dict[str, Any]:
        """The steps after locking and repairing dpkg: resolve, check, download, install."""
        session = self.session
        session.refresh_lists()
        self.resolve()
        if self._unresolved and self.request.refresh_lists is None:
            # Lists young enough by age can still predate a just-published package.
            session.refresh_lists(force=True)
            self.resolve()
        self.raise_missing_targets()
        self.mark()
        self.check_plan()
        session.check_space()
        if self.request.dry_run:
            return self.result()
        if not session.changes():
            self.verify()
            return self.result()
        session.check_stop("before downloading")
        downloaded = session.download()
        session.check_stop("before installing (nothing was installed)")
        try:
            session.commit({target.name: target.before for target in self.targets})
        except WorkerFailure as failure:
            raise self.explain_failure(failure) from None
        self.verify()
        session.remove_archives(downloaded)
        return self.result()

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
            if self.session.lists_refreshed == "failed":
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
                self.session.check_hold(package, target.name, target.before, self.hold_advice)
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
                    f"{unmet_dependencies(package.versions[target.version])}",
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
        changes = self.cache.get_changes()  # a walk over every package: once
        removals = [package.name for package in changes if package.marked_delete]
        if removals:
            raise WorkerFailure(
                REMOVALS,
                f"installing would remove {', '.join(sorted(removals))}; removals are never done "
                "by APT_UPDATE jobs",
                {"removals": ", ".join(sorted(removals))},
            )
        untrusted = []
        for package in changes:
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

    def explain_failure(self, failure: WorkerFailure) -> WorkerFailure:
        """dpkg failed: add what dpkg's database shows of the requested packages (versions
        after, rebootRequired) and name the packages dpkg left unfinished that the job did
        not ask for: an earlier broken maintainer script fails every later install."""
        requested = {target.name for target in self.targets}
        blocking = {
            name: state for name, state in dpkg.pending_packages().items() if name not in requested
        }
        states = dpkg.dpkg_states(requested)
        packages = []
        for entry, target in zip(self.result()["packages"], self.targets):
            version, state = states.get(target.name, ("", "not-installed"))
            after = version if version and state not in ("not-installed", "config-files") else None
            done = after == target.version and state == "installed"
            result = entry["result"] if done else "failed"
            packages.append({**entry, "after": after, "result": result})
        reboot = self.session.reboot_required()
        failure.outcome = {"packages": packages, "rebootRequired": reboot}
        if blocking:
            names = ", ".join(sorted(blocking))
            left = "; ".join(f"{name} is {state}" for name, state in sorted(blocking.items()))
            installed = [entry["name"] for entry in packages if entry["result"] != "failed"]
            failure.details["blockingPackage"] = names
            failure.reason = (
                (f"{', '.join(installed)} installed, but " if installed else "")
                + f"{failure.reason} ({left}: it fails every install until it is repaired or "
                f"removed; an AWS-Remove-Application job for {names} clears it)"
            )
        return failure

    def verify(self) -> None:
        """Re-read dpkg's database (its status file, not a second cache open): every
        requested package must be installed at its target."""
        self.session.emit({"phase": "verifying"}, True)
        states = dpkg.dpkg_states(target.name for target in self.targets)
        for target in self.targets:
            version, state = states.get(target.name, ("", "not-installed"))
            installed = version if state not in ("not-installed", "config-files") else None
            if installed != target.version or state != "installed":
                raise WorkerFailure(
                    INSTALL_FAILED,
                    f"after the install dpkg reports {target.name} at {installed or 'none'} "
                    f"(state {state}), expected {target.version} installed",
                    {"log": self.session.log_tail},
                )

    def result(self) -> Dict[str, Any]:
        """The outcome as a JSON-ready value (the handler turns it into statusDetails).

        A re-run after a crash reports the versions before of the job's first attempt."""
        dry_run = self.request.dry_run
        first = self.session.first_versions
        shown = [
            replace(target, before=first[target.name]) if target.name in first else target
            for target in self.targets
        ]
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
                for target in shown
            ],
            "otherChanges": self.other_changes,
            "rebootRequired": self.session.reboot_required(),
            **self.session.state(),
        }

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

    def _check_downgrade(self, target: Target) -> None:
        if target.result == "downgraded" and not self.request.allow_downgrade:
            raise WorkerFailure(
                DOWNGRADE,
                f"{target.name} {target.version} is older than the installed {target.before}; "
                "set allowDowngrade to downgrade",
                {"package": target.name},
            )

    def _broken_reason(self) -> str:
        problems = []
        depcache = self.cache._depcache
        for low_level in self.cache._cache.packages:
            if depcache.marked_install(low_level) and depcache.is_inst_broken(low_level):
                package = self.cache[low_level.get_fullname(True)]
                problems.append(f"{package.name}: {unmet_dependencies(package.candidate)}")
        return "dependencies cannot be satisfied: " + "; ".join(problems[:5])


def unmet_dependencies(version: Any) -> str:
    """``needs missing-lib >= 1.0, ...``: dependencies of ``version`` no known version meets."""
    unmet = [
        dependency.rawstr
        for dependency in (version.dependencies if version is not None else [])
        if not dependency.target_versions
    ]
    if unmet:
        return "needs " + ", ".join(unmet) + ", which no source offers"
    return "its dependencies cannot be installed together with the installed packages"
