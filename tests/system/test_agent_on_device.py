"""The installed agent on Debian 12 booted with systemd, through what a device meets: the
watchdog, stops, restarts, kill -9 and reboots while dpkg runs, a postinst that restarts the
agent, AWS-Reboot, and the agent's own upgrade by a job.

One guest for the module, scenarios in order. Tests marked ``defect`` pin a defect of issue 10
found on a real device (../shared/system-test-notes.md) and name the fix they need.
"""

from __future__ import annotations

import pytest
from conftest import NEXT_VERSION, booted_device
from device import POSTINST_SECONDS, SETTINGS, UNIT
from guest import wait_until
from managed_fixtures import document

from agent.version import __version__

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def device(tmp_path_factory, jobs_stack, agent_debs):
    for device in booted_device("bookworm", tmp_path_factory, jobs_stack, agent_debs):
        device.write_settings()
        device.apt_install("iot-jobs-agent")
        # kill -9 is followed by Restart=on-failure after 2 s instead of the unit's 30 s.
        device.drop_in("systest", "RestartSec=2s\n")
        device.wait_active()
        yield device


@pytest.fixture(autouse=True)
def scenario(device):
    """Each scenario starts with the agent running and leaves no job unfinished."""
    device.ensure_running()
    yield
    device.ensure_running()
    device.finish_jobs()


def assert_truthful_install(device, job, package):
    done = device.wait_job(job, timeout=180)
    assert done["status"] == "SUCCEEDED", done
    assert done["details"]["versionAfter"] == "1.0", done
    assert device.guest.dpkg_status(package) == "install ok installed 1.0"
    return done


def test_the_agent_starts_at_install_when_settings_exist(device):
    state = device.state()
    assert state["ActiveState"] == "active", state
    assert state["SubState"] == "running", state


def test_a_hung_agent_is_killed_by_the_watchdog_and_restarted(device):
    device.drop_in("watchdog", "WatchdogSec=6s\n")
    device.guest.run("systemctl", "restart", UNIT)
    device.wait_active()
    hung = device.main_pid()
    device.guest.run("kill", "-STOP", str(hung))
    device.wait_restarted(hung, timeout=90)
    journal = device.guest.journal()
    assert "Watchdog timeout" in journal, journal
    device.guest.path(f"/etc/systemd/system/{UNIT}.d/watchdog.conf").unlink()
    device.guest.run("systemctl", "daemon-reload")
    device.guest.run("systemctl", "restart", UNIT)
    device.wait_active()


@pytest.mark.defect("issue 10 item 1: the agent hands a job over at once when stopped while "
                       "dpkg runs; the next start re-runs it and reports (apt + client helpers)")
def test_stop_during_a_long_postinst_is_reported_by_the_next_start(device):
    device.apt_job("stop-1", "rs-stop")
    device.wait_postinst_started("rs-stop")
    device.guest.run("systemctl", "stop", UNIT, timeout=120)
    try:
        assert device.execution("stop-1")["status"] == "IN_PROGRESS"
    finally:
        device.guest.run("systemctl", "start", UNIT, timeout=120)
    done = assert_truthful_install(device, "stop-1", "rs-stop")
    assert done["details"]["versionBefore"] == "none", done


@pytest.mark.defect("issue 10 item 1 (apt + client helpers)")
def test_restart_during_a_long_postinst_is_reported_truthfully(device):
    device.apt_job("restart-1", "rs-restart")
    device.wait_postinst_started("rs-restart")
    device.guest.run("systemctl", "restart", UNIT, timeout=120)
    done = assert_truthful_install(device, "restart-1", "rs-restart")
    assert done["details"]["versionBefore"] == "none", done


@pytest.mark.defect("issue 10 item 1: no deadlock with a postinst's blocking systemctl "
                       "try-restart of the agent (apt + client helpers)")
def test_a_postinst_restarting_the_agent_does_not_deadlock(device):
    old = device.main_pid()
    device.apt_job("restarter-1", "rs-restarter")
    assert_truthful_install(device, "restarter-1", "rs-restarter")
    device.wait_restarted(old)


@pytest.mark.defect("issue 10 item 6: a re-run after kill -9 keeps the first versionBefore "
                       "(apt helper)")
def test_kill_9_during_dpkg_restarts_the_agent_and_reports_the_install(device):
    device.apt_job("kill-1", "rs-kill")
    device.wait_postinst_started("rs-kill")
    killed = device.main_pid()
    device.guest.run("kill", "-9", str(killed))
    device.wait_restarted(killed, timeout=60)
    done = assert_truthful_install(device, "kill-1", "rs-kill")
    assert done["details"]["versionBefore"] == "none", done
    assert device.state()["NRestarts"] != "0"


def test_aws_reboot_reboots_the_guest_and_succeeds_after_the_boot(device):
    boots = device.guest.boots
    boot_id = device.guest.run("cat", "/proc/sys/kernel/random/boot_id").stdout.strip()
    device.create_job("aws-reboot-1", document("AWS-Reboot"))
    wait_until(lambda: device.guest.boots > boots, 120, "the guest to reboot")
    device.guest.wait_booted(boots)
    done = device.wait_job("aws-reboot-1", timeout=120)
    assert done["status"] == "SUCCEEDED", done
    new_id = device.guest.run("cat", "/proc/sys/kernel/random/boot_id").stdout.strip()
    assert new_id != boot_id
    assert done["details"]["bootId"] == new_id, done


@pytest.mark.defect("issue 10 item 2: a reboot waits while dpkg runs (logind inhibitor, apt "
                       "helper) and item 1 (the job handed over to the next boot)")
def test_a_reboot_during_a_long_postinst_waits_for_dpkg(device):
    # After the AWS-Reboot scenario: logind reads the package's InhibitDelayMaxSec drop-in at
    # its start, so the guest has booted once since the package was installed.
    boots = device.guest.boots
    device.apt_job("reboot-dpkg-1", "rs-reboot")
    device.wait_postinst_started("rs-reboot")
    device.guest.run("systemctl", "reboot", check=False, timeout=60)
    wait_until(lambda: device.guest.boots > boots, POSTINST_SECONDS + 120, "the guest to reboot")
    device.guest.wait_booted(boots)
    assert device.guest.dpkg_status("rs-reboot") == "install ok installed 1.0"
    device.wait_active()
    assert_truthful_install(device, "reboot-dpkg-1", "rs-reboot")


@pytest.mark.defect("issue 10 item 1: the stop by the package's own restart hands the job to "
                       "the new agent (apt + client helpers)")
def test_an_apt_update_job_upgrades_the_agent_itself(device, agent_debs):
    settings = device.guest.path(SETTINGS).read_text()
    device.publish([agent_debs[NEXT_VERSION]])
    old = device.main_pid()
    device.apt_job("self-update-1", "iot-jobs-agent")
    done = device.wait_job("self-update-1", timeout=240)
    assert done["status"] == "SUCCEEDED", done
    assert done["details"]["versionBefore"] == __version__, done
    assert done["details"]["versionAfter"] == NEXT_VERSION, done
    assert device.agent_version() == NEXT_VERSION
    assert device.main_pid() != old
    assert device.guest.path(SETTINGS).read_text() == settings
