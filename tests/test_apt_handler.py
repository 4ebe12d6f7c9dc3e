"""APT_UPDATE handler against real .debs, a real repository and a throwaway root.

Each test runs the real handler, which runs the real worker process (python-apt, dpkg through
the root's wrapper). The job context is the real JobContext, told to stop as the job client
does; tests/test_apt_e2e.py goes through the agent, the broker and the local Jobs service.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Dict, Tuple

import pytest
from apt_helpers import POSTINST_FAILURE, JobThread, new_job, phases_of, progress_of, run_job

from agent.apt.dpkg import lock_log_due
from agent.errors import JobFailed, JobHandedOver, JobRejected
from agent.job import StopReason
from local_jobs.apt_repo import AptRoot, Package, build_repository, make_root

pytest_plugins = ("apt_fixtures",)
pytestmark = pytest.mark.timeout(60)


def failure(root, document, **settings) -> JobFailed:
    with pytest.raises(JobFailed) as raised:
        run_job(root, document, **settings)
    return raised.value


def test_install_reports_versions_and_changes_dpkg(apt_root):
    details = run_job(apt_root, {"jobType": "APT_UPDATE", "aptPackageName": "alpha"})

    assert details["result"] == "installed"
    assert (details["package"], details["versionBefore"], details["versionAfter"]) == (
        "alpha",
        "none",
        "2.0",
    )
    assert details["rebootRequired"] == "false"
    assert apt_root.installed_version("alpha") == "2.0"
    assert apt_root.status("alpha")["Status"] == "install ok installed"


def test_dependency_is_pulled_in_and_reported(apt_root):
    details = run_job(apt_root, {"aptPackageName": "beta"})

    assert details["result"] == "installed"
    assert details["otherChanges"] == "gamma=none->1.0"
    assert apt_root.installed_version("gamma") == "1.0"


def test_upgrade_reports_the_version_before(apt_root, apt_repository):
    apt_root.install(apt_repository.deb("alpha", "1.0"))

    details = run_job(apt_root, {"aptPackageName": "alpha"})

    assert (details["result"], details["versionBefore"], details["versionAfter"]) == (
        "upgraded",
        "1.0",
        "2.0",
    )
    assert apt_root.installed_version("alpha") == "2.0"


def test_running_the_same_job_again_reports_already_installed(apt_root):
    document = {"aptPackageName": "alpha"}
    run_job(apt_root, document)
    status_before = (apt_root.admin_dir / "status").read_bytes()

    details = run_job(apt_root, document)

    assert details["result"] == "already-installed"
    assert details["versionBefore"] == details["versionAfter"] == "2.0"
    assert (apt_root.admin_dir / "status").read_bytes() == status_before


def test_pinned_version_is_installed_instead_of_the_newest(apt_root):
    details = run_job(apt_root, {"aptPackageName": "alpha", "aptPackageVersion": "1.0"})

    assert details["versionAfter"] == "1.0"
    assert apt_root.installed_version("alpha") == "1.0"


def test_downgrade_is_refused_without_allow_downgrade(apt_root, apt_repository):
    apt_root.install(apt_repository.deb("alpha", "2.0"))

    error = failure(apt_root, {"aptPackageName": "alpha", "aptPackageVersion": "1.0"})

    assert error.code == "DOWNGRADE"
    assert "allowDowngrade" in error.reason
    assert apt_root.installed_version("alpha") == "2.0"


def test_downgrade_is_done_with_allow_downgrade(apt_root, apt_repository):
    apt_root.install(apt_repository.deb("alpha", "2.0"))

    details = run_job(
        apt_root, {"aptPackageName": "alpha", "aptPackageVersion": "1.0", "allowDowngrade": True}
    )

    assert (details["result"], details["versionBefore"], details["versionAfter"]) == (
        "downgraded",
        "2.0",
        "1.0",
    )
    assert apt_root.installed_version("alpha") == "1.0"


def test_unknown_package_fails_not_found(apt_root):
    error = failure(apt_root, {"aptPackageName": "no-such-package"})

    assert error.code == "NOT_FOUND"
    assert "'no-such-package'" in error.reason
    # Lists fresh by age can predate a new package: one refresh is tried before giving up.
    assert error.details["listsRefreshed"] == "true"


def test_unknown_version_fails_version_not_found_listing_known_ones(apt_root):
    error = failure(apt_root, {"aptPackageName": "alpha", "aptPackageVersion": "9.9"})

    assert error.code == "VERSION_NOT_FOUND"
    assert "2.0" in error.reason and "1.0" in error.reason
    assert apt_root.installed_version("alpha") is None


def test_virtual_package_fails_naming_its_providers(apt_root):
    error = failure(apt_root, {"aptPackageName": "virtual-thing"})

    assert error.code == "NOT_FOUND"
    assert "epsilon" in error.reason


def test_package_outside_the_allow_list_is_rejected(apt_root):
    with pytest.raises(JobRejected) as raised:
        run_job(apt_root, {"aptPackageName": "alpha"}, allowed_packages=("gamma", "be*"))

    assert raised.value.code == "NOT_ALLOWED"
    assert "[apt] allowed_packages" in raised.value.reason
    assert apt_root.installed_version("alpha") is None


def test_empty_allow_list_rejects_every_job(apt_root):
    with pytest.raises(JobRejected) as raised:
        run_job(apt_root, {"aptPackageName": "alpha"}, allowed_packages=())

    assert raised.value.code == "NOT_ALLOWED"
    assert "[apt] allowed_packages is empty" in raised.value.reason


def test_held_package_is_not_changed(apt_root, apt_repository):
    apt_root.install(apt_repository.deb("alpha", "1.0"))
    apt_root.hold("alpha")

    error = failure(apt_root, {"aptPackageName": "alpha"})

    assert error.code == "HELD"
    assert "allowHeldChange" in error.reason
    assert apt_root.installed_version("alpha") == "1.0"


def test_held_package_is_changed_with_allow_held_change(apt_root, apt_repository):
    apt_root.install(apt_repository.deb("alpha", "1.0"))
    apt_root.hold("alpha")

    details = run_job(apt_root, {"aptPackageName": "alpha", "allowHeldChange": True})

    assert details["result"] == "upgraded"
    assert apt_root.installed_version("alpha") == "2.0"


def test_conflict_that_would_remove_a_package_is_refused(apt_root, apt_repository):
    apt_root.install(apt_repository.deb("alpha", "1.0"))

    error = failure(apt_root, {"aptPackageName": "delta"})

    assert error.code == "REMOVALS"
    assert error.details["removals"] == "alpha"
    assert apt_root.installed_version("alpha") == "1.0"
    assert apt_root.installed_version("delta") is None


def test_unsatisfiable_dependency_fails_broken_naming_it(apt_root):
    error = failure(apt_root, {"aptPackageName": "orphan"})

    assert error.code == "BROKEN"
    assert "missing-lib" in error.reason


def test_failing_postinst_fails_install_failed_with_its_message(apt_root):
    error = failure(apt_root, {"aptPackageName": "bad"})

    assert error.code == "INSTALL_FAILED"
    assert "post-installation script" in error.reason
    assert POSTINST_FAILURE in error.details["log"]


def test_dry_run_reports_the_plan_and_changes_nothing(apt_root):
    status_before = (apt_root.admin_dir / "status").read_bytes()

    details = run_job(apt_root, {"aptPackageName": "beta", "dryRun": True})

    assert details["result"] == "dry-run"
    assert (details["versionBefore"], details["versionAfter"]) == ("none", "none")
    assert details["versionTarget"] == "1.0"
    assert details["otherChanges"] == "gamma=none->1.0"
    assert (apt_root.admin_dir / "status").read_bytes() == status_before
    assert not list((apt_root.path / "var/cache/apt/archives").glob("*.deb"))


def test_several_packages_are_installed_in_one_transaction(apt_root):
    details = run_job(apt_root, {"aptPackages": ["alpha", {"name": "gamma", "version": "1.0"}]})

    assert details["package"] == "alpha, gamma"
    assert details["result"] == "alpha=installed, gamma=installed"
    assert details["versionAfter"] == "alpha=2.0, gamma=1.0"
    assert apt_root.installed_version("alpha") == "2.0"
    assert apt_root.installed_version("gamma") == "1.0"


def test_one_bad_package_in_a_list_installs_none(apt_root):
    error = failure(apt_root, {"aptPackages": ["alpha", "no-such-package"]})

    assert error.code == "NOT_FOUND"
    assert apt_root.installed_version("alpha") is None


def test_interrupted_dpkg_is_repaired_and_reported(apt_root, apt_repository):
    apt_root.interrupt_dpkg(apt_repository.deb("gamma", "1.0"))
    assert apt_root.journal_dirty()

    details = run_job(apt_root, {"aptPackageName": "alpha"})

    assert details["dpkgRepaired"] == "true"
    assert details["result"] == "installed"
    assert not apt_root.journal_dirty()
    assert apt_root.status("gamma")["Status"] == "install ok installed"


def test_unpacked_package_is_configured_before_the_job(apt_root, apt_repository):
    apt_root.unpack(apt_repository.deb("gamma", "1.0"))

    details = run_job(apt_root, {"aptPackageName": "alpha"})

    assert details["dpkgRepaired"] == "true"
    assert apt_root.status("gamma")["Status"] == "install ok installed"


def test_lock_held_by_another_process_is_waited_for(apt_root, lock_holder):
    holder = lock_holder(apt_root.frontend_lock)
    job = new_job()
    releaser = threading.Timer(1.5, holder.release)
    releaser.start()
    try:
        details = run_job(apt_root, {"aptPackageName": "alpha"}, job=job, lock_timeout_seconds=30)
    finally:
        releaser.cancel()

    assert details["result"] == "installed"
    waiting = [entry for entry in progress_of(job) if entry.get("phase") == "waiting_for_lock"]
    assert waiting, progress_of(job)
    assert f"pid {holder.pid} (" in waiting[0]["lockHolder"]


def test_the_log_says_who_holds_the_lock_while_a_job_waits(apt_root, lock_holder, caplog):
    holder = lock_holder(apt_root.frontend_lock)
    releaser = threading.Timer(1.5, holder.release)
    releaser.start()
    try:
        with caplog.at_level(logging.INFO, logger="job_client.handler"):
            run_job(apt_root, {"aptPackageName": "alpha"}, lock_timeout_seconds=30)
    finally:
        releaser.cancel()

    waiting = [line for line in caplog.messages if "waiting for" in line]
    assert waiting, caplog.messages
    assert waiting[0].startswith(
        f"job job-apt-1: apt worker: waiting for {apt_root.frontend_lock}, held by "
    )
    assert f"pid {holder.pid} (" in waiting[0]


@pytest.mark.parametrize(
    ("logged_at", "waited", "due"),
    [(None, 0.0, True), (0.0, 29.9, False), (0.0, 30.0, True), (30.0, 45.0, False)],
)
def test_a_lock_wait_is_logged_at_once_then_every_30_seconds(logged_at, waited, due):
    assert lock_log_due(logged_at, waited) is due


def test_worker_log_lines_carry_one_prefix(apt_root, caplog):
    with caplog.at_level(logging.INFO, logger="job_client.handler"):
        run_job(apt_root, {"aptPackageName": "alpha"})

    job_lines = [line.split(": ", 1) for line in caplog.messages if line.startswith("job ")]
    assert {job for job, _ in job_lines} == {"job job-apt-1"}, caplog.messages
    worker_lines = [line for _, line in job_lines if line.startswith(("dpkg: ", "apt worker"))]
    assert any(line.startswith("dpkg: Setting up alpha") for line in worker_lines), worker_lines
    assert not [line for line in worker_lines if "agent.apt" in line or "INFO" in line]


def test_lock_held_past_the_deadline_fails_lock_timeout_naming_the_holder(apt_root, lock_holder):
    holder = lock_holder(apt_root.frontend_lock)
    started = time.monotonic()

    error = failure(apt_root, {"aptPackageName": "alpha"}, lock_timeout_seconds=1)

    assert error.code == "LOCK_TIMEOUT"
    assert str(apt_root.frontend_lock) in error.reason
    assert error.details["lockHolder"].startswith(f"pid {holder.pid} (")
    assert time.monotonic() - started < 20
    assert apt_root.installed_version("alpha") is None


def test_stop_request_while_waiting_for_the_lock_cancels_the_job(apt_root, lock_holder):
    lock_holder(apt_root.frontend_lock)

    job = new_job()
    canceled = threading.Timer(0.5, job._request_stop, (StopReason.SERVICE_ENDED, "canceled"))
    canceled.start()

    with pytest.raises(JobFailed) as raised:
        run_job(apt_root, {"aptPackageName": "alpha"}, job=job, lock_timeout_seconds=30)

    assert raised.value.code == "CANCELED"
    assert apt_root.installed_version("alpha") is None


def test_job_over_its_time_limit_is_killed_and_the_next_job_repairs(apt_root):
    error = failure(apt_root, {"aptPackageName": "slow"}, job_timeout_seconds=3)

    assert error.code == "TIMEOUT"
    assert "[apt] job_timeout_seconds" in error.reason

    details = run_job(apt_root, {"aptPackageName": "alpha"})

    assert details["dpkgRepaired"] == "true"
    assert apt_root.status("slow")["Status"] == "install ok installed"


def test_too_little_free_space_fails_no_space(apt_root):
    error = failure(apt_root, {"aptPackageName": "big"}, min_free_space_mb=10**9)

    assert error.code == "NO_SPACE"
    assert "min_free_space_mb" in error.reason
    assert apt_root.installed_version("big") is None


def test_download_and_install_progress_is_relayed(apt_root):
    job = new_job()

    run_job(apt_root, {"aptPackageName": "big"}, job=job)

    downloads = [entry for entry in progress_of(job) if entry.get("phase") == "downloading"]
    assert any(int(entry.get("totalBytes", 0)) >= 300_000 for entry in downloads), downloads
    assert {"phase": "installing", "percent": "100"} in progress_of(job)
    # The downloaded archive is not kept once installed.
    assert not list((apt_root.path / "var/cache/apt/archives").glob("*.deb"))


def test_reboot_required_by_a_package_is_reported(apt_root):
    details = run_job(apt_root, {"aptPackageName": "needs-reboot"})

    assert details["rebootRequired"] == "true"


def test_untrusted_source_is_refused(apt_root, apt_repository):
    apt_root.set_sources(apt_repository.sources_line(trusted=False))
    apt_root.refresh_lists()

    error = failure(apt_root, {"aptPackageName": "alpha"})

    assert error.code == "UNTRUSTED"
    assert apt_root.installed_version("alpha") is None


def test_old_lists_are_refreshed(apt_root):
    apt_root.age_lists(2 * 24 * 3600)

    details = run_job(apt_root, {"aptPackageName": "alpha"})

    assert details["listsRefreshed"] == "true"


def test_young_lists_are_not_refreshed(apt_root):
    details = run_job(apt_root, {"aptPackageName": "alpha"})

    assert details["listsRefreshed"] == "false"


def test_refresh_false_keeps_old_lists(apt_root):
    apt_root.age_lists(2 * 24 * 3600)

    details = run_job(apt_root, {"aptPackageName": "alpha", "refreshPackageLists": False})

    assert details["listsRefreshed"] == "false"


def test_failed_refresh_goes_on_with_the_old_lists_and_says_so(apt_root, apt_repository):
    apt_root.set_sources(
        apt_repository.sources_line(scheme="copy"),
        f"deb [trusted=yes] file:{apt_root.path}/no-such-repository ./",
    )

    details = run_job(apt_root, {"aptPackageName": "alpha", "refreshPackageLists": True})

    assert details["result"] == "installed"
    assert details["listsRefreshed"] == "failed"
    assert "no-such-repository" in details["notes"]


def test_package_published_after_the_last_refresh_is_found(tmp_path):
    # copy: keeps a copy of the index on every host (file: may be read in place, see below)
    repository = build_repository(tmp_path / "repo", [Package("alpha", "1.0")])
    root = make_root(tmp_path / "root", [repository.sources_line(scheme="copy")])
    root.refresh_lists()
    build_repository(repository.path, [Package("alpha", "1.0"), Package("late", "1.0")])

    details = run_job(root, {"aptPackageName": "late"})

    assert details["result"] == "installed"
    assert details["listsRefreshed"] == "true"


def keep_lists_uncompressed(root: AptRoot) -> None:
    """Debian's default (Docker's Debian images set Acquire::GzipIndexes): apt 2.x then keeps
    the lists of a file: repository as a symlink to its Packages; apt 3.0 copies them."""
    (root.path / "etc/apt/apt.conf.d/50uncompressed-lists").write_text(
        'Acquire::GzipIndexes "false";\n'
    )


def file_repository_root(tmp_path, *names: str) -> Tuple[AptRoot, Dict[str, Path]]:
    """A root reading one file: repository per name (holding that package), lists fresh and
    uncompressed: symlinks into the repository on apt 2.x, copies on apt 3.0. The tests below
    hold on both."""
    folders = {name: tmp_path / f"repo-{name}" for name in names}
    repositories = [build_repository(folders[name], [Package(name, "1.0")]) for name in names]
    root = make_root(tmp_path / "root", [r.sources_line() for r in repositories])
    keep_lists_uncompressed(root)
    root.refresh_lists()
    lists = list((root.path / "var/lib/apt/lists").glob("*Packages*"))
    assert len(lists) == len(names), lists
    return root, folders


def test_lists_of_a_removed_file_repository_do_not_stop_a_job(tmp_path):
    # apt 2.x: the lists entry dangles once the repository is gone; apt 3.0: a copy remains
    root, folders = file_repository_root(tmp_path, "alpha", "gone")
    shutil.rmtree(folders["gone"])

    details = run_job(root, {"aptPackageName": "alpha"})

    assert details["result"] == "installed"
    assert root.installed_version("alpha") == "1.0"


def test_old_uncompressed_lists_of_a_file_repository_are_refreshed(tmp_path):
    root, _ = file_repository_root(tmp_path, "alpha")
    root.age_lists(2 * 24 * 3600)

    details = run_job(root, {"aptPackageName": "alpha"})

    assert details["listsRefreshed"] == "true"


def test_young_uncompressed_lists_of_a_file_repository_are_not_refreshed(tmp_path):
    # on apt 2.x the symlink's target carries the repository's time, not the refresh's
    root, folders = file_repository_root(tmp_path, "alpha")
    old = time.time() - 3 * 24 * 3600
    for path in folders["alpha"].iterdir():
        os.utime(path, (old, old))

    details = run_job(root, {"aptPackageName": "alpha"})

    assert details["listsRefreshed"] == "false"


# -- another package manager at work while the job waits for the dpkg lock ------------------


def while_waiting_for_the_lock(root, lock_holder, document, change, monkeypatch, **settings):
    """Run ``document`` while another process holds dpkg's frontend lock; once the job waits
    for it, ``change()`` dpkg's state the way that other package manager would; then release."""
    holder = lock_holder(root.frontend_lock)
    running = JobThread(root, document, new_job(), lock_timeout_seconds=60, **settings)
    running.wait_for_phase("waiting_for_lock")
    monkeypatch.setenv("DPKG_FRONTEND_LOCKED", "1")  # the holder's dpkg runs under its lock
    change()
    holder.release()
    return running


def test_a_newer_version_installed_during_the_lock_wait_is_not_downgraded(
    apt_root, apt_repository, lock_holder, monkeypatch
):
    running = while_waiting_for_the_lock(
        apt_root,
        lock_holder,
        {"aptPackageName": "alpha", "aptPackageVersion": "1.0"},
        lambda: apt_root.install(apt_repository.deb("alpha", "2.0")),
        monkeypatch,
    )

    with pytest.raises(JobFailed) as raised:
        running.result()

    assert raised.value.code == "DOWNGRADE"
    assert apt_root.installed_version("alpha") == "2.0"


def test_version_before_is_read_after_the_lock_wait(
    apt_root, apt_repository, lock_holder, monkeypatch
):
    running = while_waiting_for_the_lock(
        apt_root,
        lock_holder,
        {"aptPackageName": "alpha"},
        lambda: apt_root.install(apt_repository.deb("alpha", "1.0")),
        monkeypatch,
    )

    details = running.result()

    assert (details["result"], details["versionBefore"], details["versionAfter"]) == (
        "upgraded",
        "1.0",
        "2.0",
    )


def test_a_hold_set_during_the_lock_wait_is_respected(
    apt_root, apt_repository, lock_holder, monkeypatch
):
    apt_root.install(apt_repository.deb("alpha", "1.0"))
    running = while_waiting_for_the_lock(
        apt_root, lock_holder, {"aptPackageName": "alpha"}, lambda: apt_root.hold("alpha"),
        monkeypatch,
    )

    with pytest.raises(JobFailed) as raised:
        running.result()

    assert raised.value.code == "HELD"
    assert apt_root.installed_version("alpha") == "1.0"


def test_dpkg_repaired_by_another_process_during_the_lock_wait_is_not_repaired_again(
    apt_root, apt_repository, lock_holder, monkeypatch
):
    apt_root.unpack(apt_repository.deb("gamma", "1.0"))
    running = while_waiting_for_the_lock(
        apt_root,
        lock_holder,
        {"aptPackageName": "alpha"},
        lambda: apt_root.dpkg("--configure", "-a"),
        monkeypatch,
    )

    details = running.result()

    assert details["result"] == "installed"
    assert details["dpkgRepaired"] == "false"
    assert "repairing_dpkg" not in phases_of(running.job)
    assert apt_root.status("gamma")["Status"] == "install ok installed"


# -- the agent stops while dpkg runs -----------------------------------------------------------


def test_agent_stopping_while_dpkg_runs_hands_the_job_over_and_the_rerun_reports_it(
    apt_root, tmp_path
):
    state_dir = tmp_path / "state"
    document = {"aptPackageName": "finishing"}
    first = while_dpkg_runs(apt_root, new_job(), state_dir=state_dir)

    first.job._request_stop(StopReason.AGENT_STOPPING)
    with pytest.raises(JobHandedOver):
        first.result()

    # handed over at once, dpkg still running (the worker, in its own session, goes on)
    assert not (apt_root.path / "finishing-done").exists()
    details = run_job(apt_root, document, new_job(attempt=2), state_dir=state_dir)

    assert (apt_root.path / "finishing-done").exists()
    assert (details["result"], details["versionBefore"], details["versionAfter"]) == (
        "installed",
        "none",
        "1.0",
    )
    assert details["dpkgRepaired"] == "false"
    assert not list((state_dir / "apt").iterdir())  # the kept versions go with the job


def test_a_job_canceled_by_the_service_while_dpkg_runs_still_finishes(apt_root):
    running = while_dpkg_runs(apt_root, new_job())

    running.job._request_stop(StopReason.SERVICE_ENDED, "canceled by the service")
    details = running.result()

    assert details["result"] == "installed"
    assert apt_root.status("finishing")["Status"] == "install ok installed"


def while_dpkg_runs(root, job, **settings) -> JobThread:
    """An install of ``finishing`` running in a thread, returned once dpkg runs its 2 s
    postinst."""
    running = JobThread(root, {"aptPackageName": "finishing"}, job, **settings)
    deadline = time.monotonic() + 30
    while not (root.path / "finishing-started").exists():
        assert time.monotonic() < deadline, "dpkg did not run the postinst"
        time.sleep(0.02)
    return running


def test_a_broken_package_failing_a_later_install_is_named_with_the_requested_ones_state(
    apt_root,
):
    failure(apt_root, {"aptPackageName": "bad"})  # its postinst fails: left half-configured

    error = failure(apt_root, {"aptPackageName": "needs-reboot"})

    assert error.code == "INSTALL_FAILED"
    assert error.details["blockingPackage"] == "bad"
    assert "bad is half-configured" in error.reason
    assert "AWS-Remove-Application job for bad" in error.reason
    assert error.reason.startswith("needs-reboot installed, but dpkg failed: ")
    # the requested package did install, and its postinst asked for a reboot
    assert (error.details["result"], error.details["versionBefore"]) == ("installed", "none")
    assert error.details["versionAfter"] == "1.0"
    assert error.details["rebootRequired"] == "true"
    assert apt_root.status("needs-reboot")["Status"] == "install ok installed"
