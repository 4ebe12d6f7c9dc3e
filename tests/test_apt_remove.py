"""Package removal (the APT worker's ``remove`` operation, used by Remove-Application) against
real .debs installed into a throwaway root.

Each test runs the real handler (``AptUpdateHandler.remove``), which runs the real worker
process (python-apt, dpkg through the root's wrapper). tests/test_managed_packages.py runs the
AWS-Remove-Application template through the agent.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from apt_helpers import apt_settings, new_job, phases_of, run_job

from agent.apt.document import AptRequest, PackageRequest
from agent.apt.handler import AptUpdateHandler
from agent.apt.protocol import WorkerConfig
from agent.errors import JobFailed, JobRejected
from local_jobs.apt_repo import Package, build_deb

pytest_plugins = ("apt_fixtures",)
pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class RequiredPackage(Package):
    """A package of ``Priority: required`` (apt_repo builds every package as optional)."""

    def control(self, installed_size_kb: int) -> str:
        return super().control(installed_size_kb).replace(
            "Priority: optional", "Priority: required"
        )


@pytest.fixture(scope="module")
def system_debs(tmp_path_factory):
    """.debs of packages the system needs: one Essential, one of Priority required, and one
    that an Essential package depends on."""
    folder = tmp_path_factory.mktemp("system-debs")
    packages = {
        "essential": Package("core-essential", "1.0", essential=True),
        "required": RequiredPackage("core-required", "1.0"),
        "lib": Package("core-lib", "1.0"),
        "needs-lib": Package("core-tool", "1.0", depends=("core-lib",), essential=True),
    }
    return {key: build_deb(package, folder) for key, package in packages.items()}


def request(*names: str, dry_run: bool = False) -> AptRequest:
    return AptRequest(tuple(PackageRequest(name) for name in names), dry_run=dry_run)


def remove(root, *names: str, dry_run: bool = False, **settings):
    handler = AptUpdateHandler(apt_settings(root, **settings))
    return handler.remove(request(*names, dry_run=dry_run), new_job())


def refused(root, *names: str, **settings) -> JobFailed:
    with pytest.raises(JobFailed) as raised:
        remove(root, *names, **settings)
    return raised.value


def test_installed_package_is_removed(apt_root, apt_repository):
    apt_root.install(apt_repository.deb("alpha", "1.0"))

    details = remove(apt_root, "alpha")

    assert (details["result"], details["package"]) == ("removed", "alpha")
    assert (details["versionBefore"], details["versionAfter"]) == ("1.0", "none")
    assert apt_root.installed_version("alpha") is None


def test_package_not_installed_succeeds_as_not_installed(apt_root):
    details = remove(apt_root, "alpha")

    assert (details["result"], details["versionBefore"]) == ("not-installed", "none")


def test_package_unknown_to_apt_succeeds_as_not_installed_and_says_so(apt_root):
    details = remove(apt_root, "no-such-package")

    assert details["result"] == "not-installed"
    assert "no-such-package is unknown to apt" in details["notes"]


def test_removing_twice_converges(apt_root, apt_repository):
    apt_root.install(apt_repository.deb("alpha", "1.0"))
    remove(apt_root, "alpha")

    assert remove(apt_root, "alpha")["result"] == "not-installed"


def test_several_packages_are_removed_in_one_transaction(apt_root, apt_repository):
    apt_root.install(apt_repository.deb("alpha", "1.0"), apt_repository.deb("gamma", "1.0"))

    details = remove(apt_root, "alpha", "gamma", "delta")

    assert details["result"] == "alpha=removed, gamma=removed, delta=not-installed"
    assert apt_root.installed_version("alpha") is None
    assert apt_root.installed_version("gamma") is None


def test_essential_package_is_refused(apt_root, system_debs):
    apt_root.install(system_debs["essential"])

    error = refused(apt_root, "core-essential")

    assert error.code == "ESSENTIAL"
    assert "core-essential is Essential" in error.reason
    assert apt_root.installed_version("core-essential") == "1.0"


def test_priority_required_package_is_refused(apt_root, system_debs):
    apt_root.install(system_debs["required"])

    error = refused(apt_root, "core-required")

    assert error.code == "ESSENTIAL"
    assert "of Priority required" in error.reason
    assert apt_root.installed_version("core-required") == "1.0"


def test_package_an_essential_package_depends_on_is_refused(apt_root, system_debs):
    apt_root.install(system_debs["lib"], system_debs["needs-lib"])

    error = refused(apt_root, "core-lib")

    assert error.code == "ESSENTIAL"
    # apt >= 2.6 leaves core-tool broken ("would break core-tool"); apt 2.2's resolver marks it
    # for removal ("would remove core-tool"): either way refused, naming it
    assert "core-tool, which the system needs" in error.reason
    assert "nothing was removed" in error.reason
    assert apt_root.installed_version("core-lib") == "1.0"
    assert apt_root.installed_version("core-tool") == "1.0"


def test_removal_that_would_remove_a_dependent_package_is_refused_naming_it(
    apt_root, apt_repository
):
    apt_root.install(apt_repository.deb("gamma", "1.0"), apt_repository.deb("beta", "1.0"))

    error = refused(apt_root, "gamma")

    assert error.code == "REMOVALS"
    assert "would also remove beta" in error.reason
    assert error.details["removals"] == "beta"
    assert apt_root.installed_version("gamma") == "1.0"
    assert apt_root.installed_version("beta") == "1.0"


def test_dependent_package_named_too_is_removed_with_it(apt_root, apt_repository):
    apt_root.install(apt_repository.deb("gamma", "1.0"), apt_repository.deb("beta", "1.0"))

    details = remove(apt_root, "gamma", "beta")

    assert details["result"] == "gamma=removed, beta=removed"
    assert apt_root.installed_version("beta") is None


def test_dependency_no_longer_needed_stays_installed(apt_root, apt_repository):
    apt_root.install(apt_repository.deb("gamma", "1.0"), apt_repository.deb("beta", "1.0"))

    remove(apt_root, "beta")

    assert apt_root.installed_version("beta") is None
    assert apt_root.installed_version("gamma") == "1.0"


def test_held_package_is_refused(apt_root, apt_repository):
    apt_root.install(apt_repository.deb("alpha", "1.0"))
    apt_root.hold("alpha")

    error = refused(apt_root, "alpha")

    assert error.code == "HELD"
    assert "take it off hold first" in error.reason
    assert apt_root.installed_version("alpha") == "1.0"


def test_package_outside_the_allow_list_is_rejected_before_the_worker(apt_root, apt_repository):
    apt_root.install(apt_repository.deb("alpha", "1.0"))

    with pytest.raises(JobRejected) as raised:
        remove(apt_root, "alpha", allowed_packages=("gamma",))

    assert raised.value.code == "NOT_ALLOWED"
    assert "'alpha' is not allowed by the setting [apt] allowed_packages" in raised.value.reason
    assert apt_root.installed_version("alpha") == "1.0"


def test_pinned_version_is_rejected(apt_root):
    handler = AptUpdateHandler(apt_settings(apt_root))
    pinned = AptRequest((PackageRequest("alpha", "1.0"),))

    with pytest.raises(JobRejected) as raised:
        handler.remove(pinned, new_job())

    assert raised.value.code == "INVALID_DOCUMENT"


def test_dry_run_reports_the_removal_and_changes_nothing(apt_root, apt_repository):
    apt_root.install(apt_repository.deb("alpha", "1.0"))

    details = remove(apt_root, "alpha", dry_run=True)

    assert (details["result"], details["versionBefore"]) == ("dry-run", "1.0")
    assert apt_root.installed_version("alpha") == "1.0"


def test_dry_run_refuses_what_the_real_run_refuses(apt_root, apt_repository):
    apt_root.install(apt_repository.deb("gamma", "1.0"), apt_repository.deb("beta", "1.0"))

    with pytest.raises(JobFailed) as raised:
        remove(apt_root, "gamma", dry_run=True)

    assert raised.value.code == "REMOVALS"


def test_lock_held_past_the_deadline_fails_lock_timeout(apt_root, apt_repository, lock_holder):
    apt_root.install(apt_repository.deb("alpha", "1.0"))
    holder = lock_holder(apt_root.frontend_lock)

    error = refused(apt_root, "alpha", lock_timeout_seconds=0.5)

    assert error.code == "LOCK_TIMEOUT"
    assert f"pid {holder.pid}" in error.details["lockHolder"]
    assert apt_root.installed_version("alpha") == "1.0"


def test_interrupted_dpkg_is_repaired_before_the_removal(apt_root, apt_repository):
    apt_root.install(apt_repository.deb("gamma", "1.0"))
    apt_root.interrupt_dpkg(apt_repository.deb("alpha", "1.0"))

    details = remove(apt_root, "gamma")

    assert details["dpkgRepaired"] == "true"
    assert apt_root.installed_version("gamma") is None
    assert apt_root.status("alpha")["Status"] == "install ok installed"


def test_removal_is_reported_as_removing_progress(apt_root, apt_repository):
    apt_root.install(apt_repository.deb("alpha", "1.0"))
    job = new_job()

    AptUpdateHandler(apt_settings(apt_root)).remove(request("alpha"), job)

    assert "removing" in phases_of(job)


def test_an_apt_update_document_cannot_ask_for_a_removal(apt_root, apt_repository):
    apt_root.install(apt_repository.deb("alpha", "1.0"))
    document = {"jobType": "APT_UPDATE", "aptPackageName": "alpha", "operation": "remove"}

    details = run_job(apt_root, document)

    assert details["result"] == "upgraded"
    assert apt_root.installed_version("alpha") == "2.0"


@pytest.mark.parametrize(
    "operation, packages, message",
    [
        ("purge", [{"name": "alpha"}], "operation must be one of install, remove"),
        ("remove", [{"name": "alpha", "version": "1.0"}], "without versions"),
    ],
)
def test_worker_request_with_a_bad_operation_is_refused(operation, packages, message):
    config = WorkerConfig(request("alpha"), "job-1", None, 1.0, 1.0, 1, operation="remove")
    data = config.to_json()
    data["operation"] = operation
    data["request"]["aptPackages"] = packages

    with pytest.raises(ValueError, match=message):
        WorkerConfig.from_json(data)
