"""Power cuts during APT_UPDATE: the agent and its apt worker (with dpkg and the maintainer
script it runs) all SIGKILLed while apt downloads and while dpkg configures, then the agent
restarted. The job ends truthfully (resumed: APT_UPDATE is safe to re-run), dpkg is repaired,
and the package ends installed exactly once.

The real jobs_agent.py with the real APT handler and worker, a throwaway apt root and the test
repository (tests/apt_fixtures.py); downloads come from a throttled HTTP server so the kill
lands mid-download.
"""

from __future__ import annotations

import http.server
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from agent_core_fixtures import create_job, execution, wait_for, wait_status
from stack_helpers import process_running, set_settings

from local_jobs.agent_process import AgentProcess, jobs_agent_command

pytest_plugins = ("resilience_fixtures", "apt_fixtures")
pytestmark = pytest.mark.timeout(120)

WORKER_STARTED = re.compile(r"apt worker started \(pid (\d+)\)")


class AgentWithApt(AgentProcess):
    """jobs_agent.py as a user starts it, [apt] pointed at a throwaway root; restartable."""

    def __init__(self, settings_path: Path, log_path: Path) -> None:
        super().__init__(jobs_agent_command(settings_path), log_path)

    def worker_pids(self):
        return [int(pid) for pid in WORKER_STARTED.findall(self.log_text())]

    def power_cut(self) -> None:
        """SIGKILL the agent and every process of its workers' sessions at once.

        The agent goes first: killed after its worker, it could see the worker die and report
        the job FAILED in between, which a power cut never lets it do."""
        pids = self.worker_pids()
        self.kill()
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)  # the worker leads its own session and group
            except ProcessLookupError:
                pass


@pytest.fixture
def apt_agent(stack, apt_root, tmp_path):
    settings_path = stack.thing("thing-1").settings_path
    set_settings(
        settings_path, "apt", root_dir=apt_root.path, allowed_packages="slow, big, finishing"
    )
    agent = AgentWithApt(settings_path, tmp_path / "agent.log")
    yield agent
    agent.stop()
    for pid in agent.worker_pids():
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_power_cut_while_dpkg_configures_then_restart_repairs_dpkg_and_succeeds(
    stack, apt_root, apt_agent
):
    apt_agent.start()
    create_job(stack, "dpkg-cut-1", {"jobType": "APT_UPDATE", "aptPackageName": "slow"})
    # The package's postinst marks its first run, then sleeps: dpkg is configuring.
    wait_for(lambda: (apt_root.path / "slow-once").exists(), 60, "dpkg to run the postinst")
    apt_agent.power_cut()
    assert apt_root.status("slow").get("Status") != "install ok installed"
    apt_agent.start()
    done = wait_status(stack, "dpkg-cut-1", timeout=90)
    assert done["status"] == "SUCCEEDED", done
    assert done["details"]["dpkgRepaired"] == "true"
    assert apt_root.status("slow")["Status"] == "install ok installed"
    assert apt_root.installed_version("slow") == "1.0"
    assert not apt_root.journal_dirty()
    assert "resuming (attempt 2)" in apt_agent.log_text()


def test_agent_killed_while_dpkg_runs_leaves_dpkg_to_finish_and_the_restart_succeeds(
    stack, apt_root, apt_agent
):
    # systemd's KillMode=process restarting the agent (or a grace period run out): the worker
    # loses the reader of its progress and result, and must still let dpkg finish.
    apt_agent.start()
    create_job(stack, "orphan-1", {"jobType": "APT_UPDATE", "aptPackageName": "finishing"})
    wait_for(lambda: (apt_root.path / "finishing-started").exists(), 60, "dpkg to run the postinst")
    [worker] = apt_agent.worker_pids()
    apt_agent.kill()
    wait_for(lambda: not process_running(worker), 60, "the orphaned apt worker to end")
    assert (apt_root.path / "finishing-done").exists(), "dpkg was interrupted"
    assert apt_root.status("finishing")["Status"] == "install ok installed"
    assert not apt_root.journal_dirty()
    # the worker went on to its last step (before it, the archives it fetched are kept)
    assert not list((apt_root.path / "var/cache/apt/archives").glob("finishing_*.deb"))
    apt_agent.start()
    done = wait_status(stack, "orphan-1", timeout=60)
    assert done["status"] == "SUCCEEDED", done
    # what the job as a whole did: the first attempt's version before is kept
    assert (done["details"]["result"], done["details"]["versionBefore"]) == ("installed", "none")
    assert done["details"]["versionAfter"] == "1.0"
    assert done["details"]["dpkgRepaired"] == "false"
    assert "resuming (attempt 2)" in apt_agent.log_text()


class _Throttled(http.server.SimpleHTTPRequestHandler):
    bytes_per_second = 60_000

    def copyfile(self, source, destination):
        while True:
            chunk = source.read(6000)
            if not chunk:
                return
            destination.write(chunk)
            destination.flush()
            time.sleep(len(chunk) / self.bytes_per_second)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def slow_http_repository(apt_repository):
    """The test repository over HTTP at 60 KB/s (big_1.0 takes about 5 s)."""

    def handler(*args, **kwargs):
        return _Throttled(*args, directory=str(apt_repository.path), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_power_cut_while_apt_downloads_then_restart_succeeds(
    stack, apt_root, apt_agent, slow_http_repository
):
    apt_root.set_sources(f"deb [trusted=yes] {slow_http_repository}/ ./")
    apt_root.refresh_lists()
    apt_agent.start()
    create_job(stack, "download-cut-1", {"jobType": "APT_UPDATE", "aptPackageName": "big"})
    partial = apt_root.path / "var/cache/apt/archives/partial"
    wait_for(
        lambda: (
            any(p.name.startswith("big_") for p in partial.iterdir()) if partial.is_dir() else False
        ),
        60,
        "the download to begin",
    )
    assert execution(stack, "download-cut-1")["status"] == "IN_PROGRESS"
    apt_agent.power_cut()
    assert apt_root.installed_version("big") is None
    apt_agent.start()
    done = wait_status(stack, "download-cut-1", timeout=90)
    assert done["status"] == "SUCCEEDED", done
    assert apt_root.status("big")["Status"] == "install ok installed"
    assert not apt_root.journal_dirty()


def test_agent_stopped_while_dpkg_runs_hands_the_job_over_and_the_next_start_reports_it(
    stack, apt_root, apt_agent
):
    # systemctl stop/restart, or a postinst restarting the agent: the stop does not wait for
    # dpkg, and nothing is reported until the next start has seen what dpkg did.
    apt_agent.start()
    create_job(stack, "handover-1", {"jobType": "APT_UPDATE", "aptPackageName": "finishing"})
    wait_for(lambda: (apt_root.path / "finishing-started").exists(), 60, "dpkg to run the postinst")
    apt_agent.process.send_signal(signal.SIGTERM)
    apt_agent.process.wait(30)
    assert not (apt_root.path / "finishing-done").exists(), "the stop waited for dpkg"
    assert execution(stack, "handover-1")["status"] == "IN_PROGRESS"
    assert "goes on alone" in apt_agent.log_text()
    apt_agent.start()
    done = wait_status(stack, "handover-1", timeout=60)
    assert done["status"] == "SUCCEEDED", done
    assert (done["details"]["result"], done["details"]["versionBefore"]) == ("installed", "none")
    assert apt_root.status("finishing")["Status"] == "install ok installed"
