"""Install-Application and Remove-Application through the APT handler on a throwaway apt root
with real .deb packages (tests/apt_fixtures.py); tests/test_apt_remove.py tests the removal
itself in detail."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_core_fixtures import InProcessAgent, create_job, wait_status
from apt_helpers import apt_settings
from managed_fixtures import document, make_handler, make_job
from stack_helpers import set_settings

from agent.errors import JobFailed, JobRejected
from agent.managed import register_managed_handlers
from local_jobs.agent_process import AgentProcess, jobs_agent_command

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(120)
pytest_plugins = ("apt_fixtures",)


def test_install_application_installs_the_packages(tmp_path, apt_root):
    handler = make_handler(tmp_path / "state", apt=apt_settings(apt_root))
    details = handler(document("AWS-Install-Application", packages="alpha gamma"), make_job())
    assert apt_root.installed_version("alpha") == "2.0"
    assert apt_root.installed_version("gamma") is not None
    assert details["result"] == "1 of 1 steps succeeded"


def test_package_outside_the_allow_list_is_rejected(tmp_path, apt_root):
    handler = make_handler(
        tmp_path / "state", apt=apt_settings(apt_root, allowed_packages=("alpha",))
    )
    with pytest.raises(JobRejected, match="packages: ") as raised:
        handler(document("AWS-Install-Application", packages="alpha gamma"), make_job())
    assert raised.value.code == "NOT_ALLOWED"
    assert apt_root.installed_version("alpha") is None


@pytest.mark.parametrize("packages", ["alpha;reboot", "-oAPT::Foo=1", "$(id)", "../alpha"])
def test_package_name_injection_is_rejected(tmp_path, apt_root, packages):
    handler = make_handler(tmp_path / "state", apt=apt_settings(apt_root))
    with pytest.raises(JobRejected) as raised:
        handler(document("AWS-Install-Application", packages=packages), make_job())
    assert raised.value.code == "INVALID_DOCUMENT"


@pytest.mark.parametrize("template", ["AWS-Install-Application", "AWS-Remove-Application"])
def test_package_actions_without_apt_settings_are_rejected_for_both_templates(tmp_path, template):
    with pytest.raises(JobRejected, match="need \\[apt\\] settings"):
        make_handler(tmp_path / "state")(document(template, packages="alpha"), make_job())


def test_remove_application_removes_the_packages(tmp_path, apt_root, apt_repository):
    apt_root.install(apt_repository.deb("alpha", "1.0"), apt_repository.deb("gamma", "1.0"))
    handler = make_handler(tmp_path / "state", apt=apt_settings(apt_root))

    details = handler(document("AWS-Remove-Application", packages="alpha gamma"), make_job())

    assert apt_root.installed_version("alpha") is None
    assert apt_root.installed_version("gamma") is None
    assert details["result"] == "1 of 1 steps succeeded"
    assert details["steps0"] == (
        "Remove-Application: alpha=removed, gamma=removed: alpha gamma"
    )


def test_remove_application_of_a_package_not_installed_succeeds(tmp_path, apt_root):
    handler = make_handler(tmp_path / "state", apt=apt_settings(apt_root))

    details = handler(document("AWS-Remove-Application", packages="alpha"), make_job())

    assert details["steps0"] == "Remove-Application: not-installed: alpha"


def test_remove_application_outside_the_allow_list_is_rejected(tmp_path, apt_root, apt_repository):
    apt_root.install(apt_repository.deb("alpha", "1.0"))
    handler = make_handler(
        tmp_path / "state", apt=apt_settings(apt_root, allowed_packages=("gamma",))
    )

    with pytest.raises(JobRejected, match="steps\\[0\\] \\(Remove-Application\\): packages: ") as e:
        handler(document("AWS-Remove-Application", packages="alpha"), make_job())

    assert e.value.code == "NOT_ALLOWED"
    assert apt_root.installed_version("alpha") == "1.0"


@pytest.mark.parametrize("packages", ["alpha;reboot", "-oAPT::Foo=1", "$(id)", "alpha=1.0", "*"])
def test_remove_application_name_injection_is_rejected(tmp_path, apt_root, packages):
    handler = make_handler(tmp_path / "state", apt=apt_settings(apt_root))
    with pytest.raises(JobRejected) as raised:
        handler(document("AWS-Remove-Application", packages=packages), make_job())
    assert raised.value.code == "INVALID_DOCUMENT"


def test_remove_application_that_would_remove_more_fails_naming_the_step(
    tmp_path, apt_root, apt_repository
):
    apt_root.install(apt_repository.deb("gamma", "1.0"), apt_repository.deb("beta", "1.0"))
    handler = make_handler(tmp_path / "state", apt=apt_settings(apt_root))

    with pytest.raises(JobFailed) as raised:
        handler(document("AWS-Remove-Application", packages="gamma"), make_job())

    assert raised.value.code == "REMOVALS"
    assert raised.value.details["failedStep"] == "steps[0] (Remove-Application)"
    assert "would also remove beta" in raised.value.reason
    assert apt_root.installed_version("gamma") == "1.0"


def test_install_application_template_end_to_end(stack, apt_root):
    settings_path = stack.thing("thing-1").settings_path
    set_settings(settings_path, "apt", root_dir=apt_root.path, allowed_packages="alpha")
    agent = InProcessAgent(stack)
    register_managed_handlers(agent.client, agent.settings)
    agent.start()
    try:
        create_job(stack, "install-1", document("AWS-Install-Application", packages="alpha"))
        found = wait_status(stack, "install-1", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)
    finally:
        agent.stop()
    assert found["status"] == "SUCCEEDED", found
    assert apt_root.installed_version("alpha") == "2.0"


def test_remove_application_template_end_to_end_through_jobs_agent(
    stack, apt_root, apt_repository, tmp_path
):
    # The exact AWS-Remove-Application document, parameters substituted, through the local
    # Jobs service to the real jobs_agent.py (default_handlers: APT_UPDATE + managed).
    apt_root.install(apt_repository.deb("alpha", "1.0"))
    settings_path = stack.thing("thing-1").settings_path
    set_settings(settings_path, "apt", root_dir=apt_root.path, allowed_packages="alpha")
    command = jobs_agent_command(settings_path)
    with AgentProcess(command, tmp_path / "agent.log") as agent:
        doc = document("AWS-Remove-Application", packages="alpha")
        create_job(stack, "remove-1", doc)
        found = wait_status(stack, "remove-1", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)
        assert agent.stop() == 0
    assert found["status"] == "SUCCEEDED", found
    assert found["details"]["steps0"] == "Remove-Application: removed: alpha"
    assert apt_root.installed_version("alpha") is None
