"""APT_UPDATE end to end: jobs created through the local Jobs service's control plane, run by
the real agent process (jobs_agent.py) over the real broker, installing real packages into a
throwaway root.

One stack, one agent and one root serve the whole module; each test uses its own packages
and job ids.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from agent_core_fixtures import create_job, execution, running_jobs_agent, wait_for, wait_status
from apt_helpers import POSTINST_FAILURE, LockHolder
from stack_helpers import set_settings

from local_jobs.agent_process import AgentProcess
from local_jobs.stack import LocalStack

pytest_plugins = ("apt_fixtures",)
pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent
ALLOWED = "alpha beta gamma bad"
_job_numbers = itertools.count(1)


class Device:
    """The stack, the agent process and the apt root it installs into."""

    def __init__(self, stack: LocalStack, agent: AgentProcess, log: Path, root) -> None:
        self.stack = stack
        self.agent = agent
        self.log = log
        self.root = root

    def run(self, document, statuses=("SUCCEEDED", "FAILED", "REJECTED"), timeout=60.0):
        """Create a job for thing-1 and wait until it reaches one of ``statuses``."""
        job_id = f"apt-e2e-{next(_job_numbers)}"
        create_job(self.stack, job_id, document)
        return wait_status(self.stack, job_id, statuses, timeout=timeout)


@pytest.fixture(scope="module")
def device(tmp_path_factory, apt_template):
    folder = tmp_path_factory.mktemp("apt-e2e")
    root = apt_template.copy_to(folder / "root")
    stack = LocalStack(folder / "stack", things=["thing-1"]).start()
    settings_path = stack.thing("thing-1").settings_path
    set_settings(
        settings_path, "apt", root_dir=root.path, allowed_packages=ALLOWED, lock_timeout_seconds=30
    )
    set_settings(settings_path, "agent", progress_interval_seconds=0.1)
    log = folder / "agent.log"
    try:
        with running_jobs_agent(settings_path, log) as agent:
            wait_for(lambda: "listening for jobs" in log.read_text(errors="replace"), 20,
                     "the agent to connect")
            yield Device(stack, agent, log, root)
    finally:
        stack.stop()


def test_issue_document_installs_the_package_and_its_dependency(device):
    found = device.run({"jobType": "APT_UPDATE", "aptPackageName": "beta"})

    assert found["status"] == "SUCCEEDED", found
    details = found["details"]
    assert (details["result"], details["package"], details["versionAfter"]) == (
        "installed", "beta", "1.0"
    )
    assert details["otherChanges"] == "gamma=none->1.0"
    assert device.root.installed_version("beta") == "1.0"


def test_upgrade_then_rerun_reports_already_installed(device, apt_repository):
    device.root.install(apt_repository.deb("alpha", "1.0"))

    first = device.run({"jobType": "APT_UPDATE", "aptPackageName": "alpha"})
    again = device.run({"jobType": "APT_UPDATE", "aptPackageName": "alpha"})

    assert first["status"] == again["status"] == "SUCCEEDED"
    assert (first["details"]["result"], first["details"]["versionBefore"]) == ("upgraded", "1.0")
    assert again["details"]["result"] == "already-installed"
    assert device.root.installed_version("alpha") == "2.0"


def test_hostile_document_is_rejected(device):
    found = device.run({"jobType": "APT_UPDATE", "aptPackageName": "alpha; reboot"})

    assert found["status"] == "REJECTED"
    assert found["details"]["errorCode"] == "INVALID_DOCUMENT"
    assert "aptPackageName" in found["details"]["reason"]


def test_package_outside_the_allow_list_is_rejected(device):
    found = device.run({"jobType": "APT_UPDATE", "aptPackageName": "delta"})

    assert found["status"] == "REJECTED"
    assert found["details"]["errorCode"] == "NOT_ALLOWED"
    assert device.root.installed_version("delta") is None


def test_lock_wait_is_visible_in_progress_then_the_job_succeeds(device):
    holder = LockHolder(device.root.frontend_lock)
    try:
        job_id = "apt-e2e-lock"
        create_job(device.stack, job_id, {"jobType": "APT_UPDATE", "aptPackageName": "gamma",
                                          "aptPackageVersion": "1.0"})

        def waiting():
            found = execution(device.stack, job_id)
            return found["details"].get("phase") == "waiting_for_lock" and found

        seen = wait_for(waiting, 30, "IN_PROGRESS with phase waiting_for_lock")
        assert seen["status"] == "IN_PROGRESS"
        assert seen["details"]["lockHolder"].startswith(f"pid {holder.pid} (")
    finally:
        holder.release()

    found = wait_status(device.stack, job_id, ("SUCCEEDED", "FAILED"), timeout=60)
    assert found["status"] == "SUCCEEDED", found


def test_failing_postinst_is_reported_failed_with_its_message(device):
    try:
        found = device.run({"jobType": "APT_UPDATE", "aptPackageName": "bad"})

        assert found["status"] == "FAILED"
        assert found["details"]["errorCode"] == "INSTALL_FAILED"
        assert POSTINST_FAILURE in found["details"]["log"]
    finally:
        device.root.dpkg("--purge", "bad", check=False)
