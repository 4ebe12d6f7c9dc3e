"""systemd/iot-jobs-agent.service: systemd accepts it, and it keeps the settings dpkg relies on."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest
from systemd_fixtures import REPO_ROOT

UNIT = Path(REPO_ROOT) / "systemd" / "iot-jobs-agent.service"


def unit_service_section() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser["Service"]


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed here (package systemd); the unit is not verified",
)
def test_unit_passes_systemd_analyze_verify_without_warnings(tmp_path):
    # verify checks that ExecStart's program exists: point the install paths at real files.
    opt = tmp_path / "opt"
    opt.mkdir()
    (opt / "venv" / "bin").mkdir(parents=True)
    (opt / "venv" / "bin" / "python").symlink_to("/usr/bin/python3")
    text = UNIT.read_text().replace("/opt/iot-jobs-agent", str(opt))
    copy = tmp_path / "iot-jobs-agent.service"
    copy.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("Restart", "on-failure"),
        ("RestartPreventExitStatus", "2"),
        ("KillMode", "process"),
        ("TimeoutStopSec", "30min"),
        ("WatchdogSec", "60s"),
        ("StateDirectory", "iot-jobs-agent"),
    ],
)
def test_unit_keeps_the_service_settings_the_agent_relies_on(key, value):
    assert unit_service_section()[key] == value


def test_unit_starts_the_installed_agent_with_the_etc_settings_file():
    assert unit_service_section()["ExecStart"].split() == [
        "/opt/iot-jobs-agent/venv/bin/python",
        "/opt/iot-jobs-agent/jobs_agent.py",
        "--config",
        "/etc/iot-jobs-agent/settings.conf",
    ]


@pytest.mark.parametrize("key", ["ProtectSystem", "PrivateTmp", "ProtectKernelModules"])
def test_unit_leaves_out_hardening_that_breaks_package_installs(key):
    assert key not in unit_service_section()


def test_agent_watchdog_default_leaves_systemd_time_to_see_the_pings():
    """The agent pings at half WatchdogSec; its offline limit must exceed one period."""
    from agent.settings import AgentSettings

    watchdog_seconds = int(unit_service_section()["WatchdogSec"].rstrip("s"))
    assert AgentSettings(state_dir=Path("/")).watchdog_offline_seconds > watchdog_seconds
