"""jobs_agent.py as a process: start-up errors, signals, kill -9 and restart, step timeouts."""

from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from agent_core_fixtures import (
    CHILD,
    REPO,
    AgentProcess,
    create_job,
    execution,
    make_pem,
    wait_for,
    wait_status,
)
from stack_helpers import run_jobs_agent, set_settings
from systemd_fixtures import NotifySocket

pytestmark = pytest.mark.timeout(90)

AGENT = REPO / "jobs_agent.py"


def run_agent_command(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return run_jobs_agent(*args, timeout=timeout)


@pytest.fixture
def settings_path(stack):
    path = stack.thing("thing-1").settings_path
    set_settings(
        path,
        "agent",
        step_timeout_minutes=10,  # 10 s of the stack's time
        heartbeat_seconds=1,
        progress_interval_seconds=0.1,
        shutdown_grace_seconds=2,
    )
    return path


@pytest.fixture
def agents(settings_path, tmp_path):
    """``agents()`` starts the child agent; every one started is killed at the end."""
    started = []

    def start() -> AgentProcess:
        agent = AgentProcess(
            settings_path, tmp_path / f"agent-{len(started)}.log", tmp_path / "runs.txt"
        )
        started.append(agent)
        agent.wait_log("connected; listening for jobs")
        return agent

    yield start
    for agent in started:
        agent.close()


# start-up and settings


def test_check_config_accepts_valid_settings(settings_path):
    result = run_agent_command("--check-config", "-c", str(settings_path))
    assert result.returncode == 0, result.stderr
    assert "settings are valid" in result.stdout


def test_missing_settings_file_says_how_to_make_one(tmp_path):
    result = run_agent_command("-c", str(tmp_path / "settings.conf"))
    assert result.returncode == 2
    assert "settings file not found" in result.stderr
    assert "settings.conf.example" in result.stderr
    assert "./start.sh --local" in result.stderr


def test_bad_value_is_named_and_exits_2(settings_path):
    set_settings(settings_path, "agent", step_timeout_minutes="soon")
    result = run_agent_command("--check-config", "-c", str(settings_path))
    assert result.returncode == 2
    assert f"{settings_path}: [agent] step_timeout_minutes: expected a whole number" in (
        result.stderr
    )


def test_private_key_readable_by_others_is_a_start_up_error(stack, settings_path):
    key = stack.thing("thing-1").private_key
    os.chmod(key, 0o644)
    try:
        result = run_agent_command("-c", str(settings_path))
    finally:
        os.chmod(key, 0o600)
    assert result.returncode == 2
    assert "[connection] private_key" in result.stderr
    assert "chmod 600" in result.stderr


def test_second_agent_on_the_same_state_dir_is_refused(agents, settings_path):
    agents()
    result = run_agent_command("-c", str(settings_path))
    assert result.returncode == 2
    assert "another agent is running" in result.stderr


# the real entry point


def test_jobs_agent_rejects_an_unknown_job_type(stack, settings_path, tmp_path):
    log_path = tmp_path / "agent.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(AGENT), "-c", str(settings_path)],
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            create_job(stack, "teleport-1", {"jobType": "TELEPORT"})
            done = wait_status(stack, "teleport-1", timeout=20)
            process.send_signal(signal.SIGTERM)
            assert process.wait(20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert done["status"] == "REJECTED"
    assert done["details"]["errorCode"] == "NO_HANDLER"
    assert done["details"]["reason"] == (
        "unknown jobType 'TELEPORT'; this agent handles APT_UPDATE and the AWS managed "
        "templates AWS-Install-Application, AWS-Remove-Application, AWS-Start-Application, "
        "AWS-Stop-Application, AWS-Restart-Application, AWS-Reboot, AWS-Download-File, "
        "AWS-Run-Command"
    )


# signals


def test_sigterm_while_idle_exits_0(agents):
    agent = agents()
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0
    assert "agent stopped" in agent.log_text()


def test_sigterm_lets_the_running_job_finish_within_the_grace_period(stack, agents):
    agent = agents()
    create_job(stack, "term-1", {"jobType": "STUBBORN", "seconds": 1})
    wait_for(lambda: agent.runs(), what="the handler to start")
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0
    done = execution(stack, "term-1")
    assert done["status"] == "SUCCEEDED"
    assert done["details"] == {"stubborn": "done"}


def test_sigterm_hands_over_a_job_that_overruns_the_grace_period(stack, agents):
    agent = agents()
    create_job(stack, "term-2", {"jobType": "STUBBORN", "seconds": 30})
    wait_for(lambda: agent.runs(), what="the handler to start")
    started = time.monotonic()
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0
    assert time.monotonic() - started < 10
    assert execution(stack, "term-2")["status"] == "IN_PROGRESS"  # never FAILED for the stop
    handed_over = r"job term-2: still running \d+ s after the stop; handed over to the next start"
    assert re.search(handed_over, agent.log_text())
    # The next start knows the run was interrupted; the handler is not safe to re-run.
    agents()
    done = wait_status(stack, "term-2", timeout=20)
    assert done["status"] == "FAILED"
    assert done["details"] == {"reason": "interrupted by agent restart", "errorCode": "INTERRUPTED"}


def test_job_handed_over_at_the_grace_period_end_is_rerun_by_the_next_start(stack, agents):
    first = agents()
    create_job(stack, "term-3", {"jobType": "STUBBORN_RERUN", "seconds": 30, "then": 0.2})
    wait_for(lambda: first.runs(), what="the handler to start")
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    assert execution(stack, "term-3")["status"] == "IN_PROGRESS"
    second = agents()
    done = wait_status(stack, "term-3", timeout=20)
    assert done["status"] == "SUCCEEDED"
    assert done["details"] == {"stubborn": "done", "attempt": "2"}
    assert second.runs() == ["term-3 1", "term-3 2"]


def test_second_sigterm_ends_the_grace_period_at_once_and_hands_the_job_over(
    stack, settings_path, agents
):
    set_settings(settings_path, "agent", shutdown_grace_seconds=60)
    first = agents()
    create_job(stack, "term-4", {"jobType": "STUBBORN_RERUN", "seconds": 60, "then": 0.2})
    wait_for(lambda: first.runs(), what="the handler to start")
    first.signal(signal.SIGTERM)
    first.wait_log("job term-4: waiting up to 60 s for it to finish")
    started = time.monotonic()
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    assert time.monotonic() - started < 10  # not the 60 s grace period
    assert "received again: ending the grace period now" in first.log_text()
    assert "job term-4: still running" in first.log_text()
    assert execution(stack, "term-4")["status"] == "IN_PROGRESS"
    agents()
    done = wait_status(stack, "term-4", timeout=20)
    assert done["status"] == "SUCCEEDED"
    assert done["details"]["attempt"] == "2"


def test_sigint_asks_a_cooperative_handler_to_stop(stack, agents):
    agent = agents()
    create_job(stack, "int-1", {"jobType": "SLEEP", "seconds": 30})
    wait_for(lambda: agent.runs(), what="the handler to start")
    agent.signal(signal.SIGINT)
    assert agent.wait() == 0
    done = execution(stack, "int-1")
    assert done["status"] == "FAILED"
    assert done["details"]["reason"] == "stopped early: agent shutting down"


# kill -9 and restart


def test_kill_mid_job_then_restart_resumes_a_rerunnable_job(stack, agents):
    first = agents()
    create_job(stack, "kill-1", {"jobType": "SLEEP", "seconds": 1.5})
    wait_for(lambda: first.runs(), what="the handler to start")
    first.kill()
    second = agents()
    done = wait_status(stack, "kill-1", timeout=20)
    assert done["status"] == "SUCCEEDED"
    assert done["details"]["attempt"] == "2"
    assert second.runs() == ["kill-1 1", "kill-1 2"]


def test_kill_mid_job_then_restart_fails_a_job_unsafe_to_rerun(stack, agents):
    first = agents()
    create_job(stack, "kill-2", {"jobType": "SLEEP_ONCE", "seconds": 30})
    wait_for(lambda: first.runs(), what="the handler to start")
    first.kill()
    second = agents()
    done = wait_status(stack, "kill-2", timeout=20)
    assert done["status"] == "FAILED"
    assert done["details"] == {"reason": "interrupted by agent restart", "errorCode": "INTERRUPTED"}
    assert second.runs() == ["kill-2 1"]


def test_resumes_are_bounded(stack, agents):
    create_job(stack, "kill-3", {"jobType": "SLEEP", "seconds": 30})
    for attempt in (1, 2, 3):
        agent = agents()
        wait_for(lambda a=attempt, ag=agent: len(ag.runs()) == a, what=f"attempt {attempt}")
        agent.kill()
    last = agents()
    done = wait_status(stack, "kill-3", timeout=20)
    assert done["status"] == "FAILED"
    assert done["details"]["reason"] == "interrupted by agent restart 3 times; giving up"
    assert len(last.runs()) == 3


def test_final_status_not_yet_delivered_is_sent_after_restart(stack, agents):
    first = agents()
    create_job(stack, "pending-1", {"jobType": "STUBBORN", "seconds": 0.5})
    wait_for(lambda: first.runs(), what="the handler to start")
    stack.kill_service()  # the final status gets no answer
    first.wait_log("job pending-1: finished: SUCCEEDED")
    first.kill()
    stack.start_service()
    second = agents()
    done = wait_status(stack, "pending-1", timeout=20)
    assert done["status"] == "SUCCEEDED"
    assert done["details"] == {"stubborn": "done"}
    assert second.runs() == ["pending-1 1"]  # delivered, not run again


def test_job_of_a_dead_agent_times_out_at_the_service(stack, settings_path, agents):
    set_settings(settings_path, "agent", step_timeout_minutes=1, heartbeat_seconds=0.3)
    agent = agents()
    create_job(stack, "dead-1", {"jobType": "SLEEP", "seconds": 30})
    wait_for(lambda: agent.runs(), what="the handler to start")
    agent.kill()
    assert wait_status(stack, "dead-1", timeout=10)["status"] == "TIMED_OUT"


def test_unreadable_journal_after_a_crash_treats_the_job_as_interrupted(
    stack, settings_path, agents
):
    first = agents()
    create_job(stack, "torn-1", {"jobType": "SLEEP", "seconds": 1})
    wait_for(lambda: first.runs(), what="the handler to start")
    first.kill()
    state_dir = settings_path.parent / "state"
    (state_dir / "journal.json").write_text('{"format": 1, "current": {"jobId": ')
    second = agents()
    done = wait_status(stack, "torn-1", timeout=20)
    assert done["status"] == "SUCCEEDED"
    assert second.runs() == ["torn-1 1", "torn-1 2"]
    assert (state_dir / "journal.json.unreadable").exists()
    assert "journal" in second.log_text() and "ignored" in second.log_text()


def test_check_config_names_a_certificate_that_is_not_valid_now(stack, settings_path, tmp_path):
    now = datetime.datetime.now(datetime.timezone.utc)
    pem = make_pem(now - datetime.timedelta(days=30), now - datetime.timedelta(days=1))
    (tmp_path / "old.crt").write_bytes(pem)
    set_settings(settings_path, "connection", certificate=tmp_path / "old.crt")
    result = run_agent_command("--check-config", "-c", str(settings_path))
    assert result.returncode == 2
    assert f"{settings_path}: [connection] certificate: the certificate" in result.stderr
    assert "expired on" in result.stderr


def test_watchdog_is_fed_while_a_job_finishes_after_sigterm(stack, settings_path, tmp_path):
    notify_socket = NotifySocket()
    env = dict(os.environ, NOTIFY_SOCKET=notify_socket.path, WATCHDOG_USEC="500000")
    env.pop("WATCHDOG_PID", None)
    runs = tmp_path / "runs.txt"
    command = [sys.executable, str(CHILD), "-c", str(settings_path), "--runs", str(runs)]
    with open(tmp_path / "agent.log", "wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log_file, stderr=log_file)
        try:
            notify_socket.wait_for("READY=1", timeout=30)
            create_job(stack, "fed-1", {"jobType": "STUBBORN", "seconds": 1.5})
            wait_for(runs.exists, what="the handler to start")
            process.send_signal(signal.SIGTERM)
            notify_socket.wait_for("STOPPING=1", timeout=10)
            assert process.wait(20) == 0
            after = notify_socket.drain()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            notify_socket.close()
    # The job went on for about 1.5 s after STOPPING=1; pings are due every 0.25 s.
    assert sum("WATCHDOG=1" in message for message in after) >= 2
    assert execution(stack, "fed-1")["status"] == "SUCCEEDED"
