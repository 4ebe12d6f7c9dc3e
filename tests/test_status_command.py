"""``jobs_agent.py status [--json]`` against the real agent (tests/agent_core_child.py) and the
local Jobs service: it answers from the state directory alone, with the agent running, stopped
or killed, and says so plainly (exit 2, no traceback) when there is no state to read."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from agent_core_fixtures import AgentProcess, create_job, wait_for, wait_status
from stack_helpers import run_jobs_agent

pytestmark = pytest.mark.timeout(120)


def status(settings: Path, *args: str, prefix=()) -> subprocess.CompletedProcess:
    return run_jobs_agent("status", "-c", str(settings), *args, prefix=prefix)


def status_json(settings: Path) -> dict:
    result = status(settings, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def agent(stack, tmp_path):
    settings = stack.thing("thing-1").settings_path
    process = AgentProcess(settings, tmp_path / "agent.log", tmp_path / "runs")
    process.wait_log("listening for jobs")
    yield process
    process.close()


def test_a_running_idle_agent_is_running_and_connected(stack, agent):
    report = status_json(stack.thing("thing-1").settings_path)
    assert report["running"] is True
    assert report["pid"] == agent.process.pid
    assert report["connected"] is True
    assert report["connectedSince"]
    assert report["current_job"] is None


def test_the_running_job_is_named(stack, agent):
    settings = stack.thing("thing-1").settings_path
    create_job(stack, "long-1", {"jobType": "SLEEP", "seconds": 60})
    report = wait_for(
        lambda: (lambda r: r if r["current_job"] else None)(status_json(settings)),
        20,
        "the job in the status",
    )
    assert report["current_job"]["jobId"] == "long-1"
    assert report["running"] is True
    assert "current job: long-1" in status(settings).stdout


def test_a_stopped_agent_still_lists_its_finished_jobs(stack, agent):
    settings = stack.thing("thing-1").settings_path
    create_job(stack, "quick-1", {"jobType": "SLEEP", "seconds": 0.2})
    wait_status(stack, "quick-1", ("SUCCEEDED",))
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0
    report = status_json(settings)
    assert report["running"] is False
    assert report["connected"] is False
    assert report["current_job"] is None
    assert report["recent"][0]["jobId"] == "quick-1"
    assert "status" in report["recent"][0]
    text = status(settings).stdout
    assert "agent: not running; last state: stopped at" in text
    assert "quick-1" in text


def test_an_agent_killed_mid_job_leaves_the_job_named(stack, agent):
    settings = stack.thing("thing-1").settings_path
    create_job(stack, "cut-1", {"jobType": "SLEEP", "seconds": 60})
    wait_for(lambda: agent.runs(), 20, "the handler to start")
    agent.kill()
    report = status_json(settings)
    assert report["running"] is False
    assert report["current_job"]["jobId"] == "cut-1"
    assert report["current_job"]["journalPhase"] == "RUNNING"
    assert "the next start of the agent resumes or reports it" in status(settings).stdout


def test_a_missing_state_directory_is_a_message_and_exit_2(tmp_path):
    settings = tmp_path / "settings.conf"
    settings.write_text(f"[connection]\n[agent]\nstate_dir = {tmp_path / 'never-made'}\n")
    result = status(settings)
    assert result.returncode == 2
    assert f"{settings}: [agent] state_dir: " in result.stderr
    assert "does not exist: no agent has run with these settings" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreadable_state_directory_is_a_message_and_exit_2(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "journal.json").write_text("{}")
    settings = tmp_path / "settings.conf"
    settings.write_text(f"[connection]\n[agent]\nstate_dir = {state}\n")
    prefix = ()
    if os.geteuid() == 0:  # root reads anything unless it drops the capabilities to
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is needed to run root without CAP_DAC_OVERRIDE")
        caps = "-dac_override,-dac_read_search"
        prefix = ("setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}")
    state.chmod(0)
    try:
        result = status(settings, prefix=prefix)
    finally:
        state.chmod(0o700)
    assert result.returncode == 2, result.stdout
    assert f"{settings}: [agent] state_dir: cannot read" in result.stderr
    assert "Traceback" not in result.stderr
