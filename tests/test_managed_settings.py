"""[managed], [services], [reboot], [download], [run_command]: secure defaults, checked values."""

from __future__ import annotations

from pathlib import Path

import pytest
from managed_fixtures import make_standin
from stack_helpers import run_jobs_agent

from agent.errors import SettingsError
from agent.managed.settings import load_managed_settings
from agent.settings import load_settings


@pytest.fixture
def settings_file(tmp_path):
    """A minimal valid agent settings file; extra text is appended by ``write``."""
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    (tmp_path / "key.pem").chmod(0o600)
    base = (
        "[connection]\nendpoint = localhost\nthing_name = t\nroot_ca = ca.pem\n"
        "certificate = cert.pem\nprivate_key = key.pem\n"
    )

    def write(extra: str = "") -> Path:
        path = tmp_path / "settings.conf"
        path.write_text(base + extra)
        return path

    return write


def load(path: Path):
    return load_managed_settings(load_settings(path))


def test_defaults_allow_nothing(settings_file):
    managed = load(settings_file())
    assert managed.services.allowed == ()
    assert managed.reboot.enabled is False
    assert managed.download.directory is None
    assert managed.run_command.enabled is False
    assert managed.run_command.allowed_commands == ()


def test_sections_are_read(settings_file, tmp_path):
    systemctl = make_standin(tmp_path / "bin", "systemctl")
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("b\n")
    managed = load(
        settings_file(
            f"[managed]\nstep_timeout_seconds = 30\n"
            f"[services]\nallowed = nginx, myapp-*\nsystemctl = {systemctl}\n"
            f"[reboot]\nenabled = yes\ncommand = {systemctl} reboot\nboot_id_file = {boot_id}\n"
            f"[download]\ndirectory = downloads\nmax_bytes = 1000\nallowed_hosts = A.example\n"
            f"[run_command]\nenabled = yes\nallowed_commands = echo /bin/true\n"
            f"allowed_users = nobody\n"
        )
    )
    assert managed.step_timeout_seconds == 30
    assert managed.services.allowed == ("nginx", "myapp-*")
    assert managed.services.systemctl == (str(systemctl),)
    assert managed.reboot.command == (str(systemctl), "reboot")
    assert managed.download.directory == tmp_path / "downloads"
    assert managed.download.allowed_hosts == ("a.example",)
    assert managed.run_command.allowed_commands == ("echo", "/bin/true")
    assert managed.run_command.allowed_users == ("nobody",)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[services]\nallows = nginx\n", "[services] allows: unknown key"),
        ("[services]\nallowed = -nginx\n", "[services] allowed: '-nginx' is not a unit name"),
        (
            "[services]\nallowed = nginx\nsystemctl = /nonexistent/systemctl\n",
            "[services] systemctl: '/nonexistent/systemctl' is not a file",
        ),
        ("[reboot]\nenabled = perhaps\n", "[reboot] enabled: expected yes or no"),
        (
            "[reboot]\nenabled = yes\nboot_id_file = /nonexistent\n",
            "[reboot] boot_id_file: '/nonexistent' does not exist",
        ),
        ("[download]\nmax_bytes = 0\n", "[download] max_bytes: must be at least 1"),
        ("[download]\nca_file = /nonexistent.pem\n", "[download] ca_file"),
        ("[run_command]\nallowed_users = ro;ot\n", "[run_command] allowed_users: 'ro;ot'"),
        ("[managed]\nstep_timeout_seconds = soon\n", "[managed] step_timeout_seconds"),
    ],
)
def test_bad_value_names_the_section_and_key(settings_file, text, message):
    with pytest.raises(SettingsError) as raised:
        load(settings_file(text))
    assert message in str(raised.value)
    assert "settings.conf" in str(raised.value)


# wired into jobs_agent.py


def test_the_agent_registers_the_managed_handler_after_apt_update(settings_file):
    import jobs_agent

    handlers = jobs_agent.default_handlers(load_settings(settings_file()))
    assert [(f.__name__, value) for f, value, _ in handlers] == [
        ("get_job_type", "APT_UPDATE"),
        ("get_document_kind", "managed-template"),
    ]


def test_check_config_names_a_bad_managed_setting_and_exits_2(settings_file):
    path = settings_file("[reboot]\nenabled = perhaps\n")
    result = run_jobs_agent("--check-config", "-c", str(path))
    assert result.returncode == 2, result.stderr
    assert f"{path}: [reboot] enabled: expected yes or no" in result.stderr
