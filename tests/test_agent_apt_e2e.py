"""The real entry point end to end: jobs_agent.py, the APT_UPDATE handler, a throwaway apt root.

The agent process is started exactly as a user starts it; only ``[apt] root_dir`` points at a
throwaway root filled from the test repository.
"""

from __future__ import annotations

import pytest
from agent_core_fixtures import create_job, running_jobs_agent, wait_status
from apt_fixtures import apt_repository, apt_root, apt_template  # noqa: F401
from stack_helpers import set_settings

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def apt_agent(stack, apt_root, tmp_path):  # noqa: F811
    settings_path = stack.thing("thing-1").settings_path
    set_settings(
        settings_path, "apt", root_dir=apt_root.path, allowed_packages="alpha, beta, gamma"
    )
    with running_jobs_agent(settings_path, tmp_path / "agent.log", stop_timeout=30) as process:
        yield process

def test_apt_update_job_installs_the_package_and_reports_it(stack, apt_root, apt_agent):  # noqa: F811
    create_job(stack, "apt-1", {"jobType": "APT_UPDATE", "aptPackageName": "alpha"})
    done = wait_status(stack, "apt-1", timeout=60)
    assert done["status"] == "SUCCEEDED", done
    assert done["details"]["result"] == "installed"
    assert done["details"]["versionAfter"] == "2.0"
    assert apt_root.installed_version("alpha") == "2.0"


def test_apt_update_job_for_a_package_not_allowed_is_rejected(stack, apt_root, apt_agent):  # noqa: F811
    create_job(stack, "apt-2", {"jobType": "APT_UPDATE", "aptPackageName": "delta"})
    done = wait_status(stack, "apt-2", timeout=60)
    assert done["status"] == "REJECTED"
    assert done["details"]["errorCode"] == "NOT_ALLOWED"
    assert apt_root.installed_version("delta") is None
