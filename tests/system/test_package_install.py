"""The Debian package on Debian 12 and 13 booted with systemd: install, settings, a job, purge."""

from __future__ import annotations

import pytest
from conftest import booted_device
from device import SETTINGS, UNIT

from agent.version import __version__

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module", params=["bookworm", "trixie"])
def device(request, tmp_path_factory, jobs_stack, agent_debs):
    yield from booted_device(request.param, tmp_path_factory, jobs_stack, agent_debs)


def test_installed_without_settings_the_service_is_inactive_not_failed(device):
    device.apt_install("iot-jobs-agent")
    state = device.state()
    assert state["ActiveState"] == "inactive", state
    assert state["Result"] == "success", state
    assert state["ConditionResult"] == "no", state
    status = device.guest.run("systemctl", "status", UNIT, check=False).stdout
    assert f"ConditionPathExists={SETTINGS} was not met" in status
    assert device.guest.run("systemctl", "is-enabled", UNIT).stdout.strip() == "enabled"


def test_packaged_agent_prints_the_checkout_version(device):
    assert device.agent_version() == __version__


def test_example_settings_are_installed_beside_the_settings(device):
    example = device.guest.path(SETTINGS + ".example").read_text()
    assert "\nstate_dir = /var/lib/iot-jobs-agent\n" in example


def test_once_settings_are_written_a_restart_starts_a_ready_agent_under_the_watchdog(device):
    device.write_settings()
    device.guest.run("iot-jobs-agent", "--check-config")
    device.guest.run("systemctl", "restart", UNIT, timeout=120)
    state = device.wait_active()
    assert state["SubState"] == "running", state
    assert state["WatchdogUSec"] == "1min", state
    assert state["NRestarts"] == "0", state


def test_apt_update_job_installs_into_the_real_dpkg_database(device, request):
    job = f"{request.node.callspec.id}-install"
    device.apt_job(job, "rs-hello", "1.0")
    done = device.wait_job(job)
    assert done["status"] == "SUCCEEDED", done
    assert done["details"]["versionBefore"] == "none"
    assert done["details"]["versionAfter"] == "1.0"
    assert device.guest.dpkg_status("rs-hello") == "install ok installed 1.0"
    history = device.guest.path("/var/log/apt/history.log").read_text()
    assert f"job={job}" in history


def test_purge_removes_the_state_and_leaves_the_operators_settings(device):
    assert device.guest.path("/var/lib/iot-jobs-agent").is_dir()
    device.guest.run("apt-get", "purge", "-y", "-q", "iot-jobs-agent", timeout=300)
    assert not device.guest.path("/var/lib/iot-jobs-agent").exists()
    assert not device.guest.path("/lib/systemd/system/" + UNIT).exists()
    assert not device.guest.path(SETTINGS + ".example").exists()
    assert device.guest.path(SETTINGS).exists()
    assert not device.guest.dpkg_status("iot-jobs-agent").startswith("install ok")
