"""Install-Application and Remove-Application through the APT handler on a throwaway apt root
with real .deb packages (tests/apt_fixtures.py)."""

from __future__ import annotations

import pytest
from agent_core_fixtures import InProcessAgent, create_job, wait_status
from apt_helpers import apt_settings
from managed_fixtures import add_sections, document, make_handler, make_job

from agent.errors import JobRejected
from agent.managed import register_managed_handlers

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


def test_package_actions_without_apt_settings_are_rejected(tmp_path):
    with pytest.raises(JobRejected, match="need \\[apt\\] settings"):
        make_handler(tmp_path / "state")(
            document("AWS-Install-Application", packages="alpha"), make_job()
        )


def test_remove_application_is_rejected_as_not_supported_yet(tmp_path, apt_root):
    handler = make_handler(tmp_path / "state", apt=apt_settings(apt_root))
    with pytest.raises(JobRejected, match="Remove-Application is not supported yet"):
        handler(document("AWS-Remove-Application", packages="alpha"), make_job())


def test_install_application_template_end_to_end(stack, apt_root):
    settings_path = stack.thing("thing-1").settings_path
    add_sections(
        settings_path, {"apt": {"root_dir": str(apt_root.path), "allowed_packages": "alpha"}}
    )
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
