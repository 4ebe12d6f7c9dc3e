"""The steps runner and the service, reboot and Run-Command actions, called as the job client
calls a handler (a real JobContext, real programs: stand-ins for systemctl and reboot)."""

from __future__ import annotations

import json
import sys
import threading

import pytest
from agent_core_fixtures import wait_for
from managed_fixtures import document, make_handler, make_job, make_standin, standin_calls

from agent.errors import JobFailed, JobHandedOver, JobRejected
from agent.job import StopReason
from agent.managed.run_command import AGENT_HOME
from agent.managed.settings import RebootSettings, RunCommandSettings, ServicesSettings
from agent.managed.steps import StepProgress

PY = sys.executable


@pytest.fixture
def systemctl(tmp_path):
    return make_standin(tmp_path / "bin", "systemctl")


def services(systemctl, *allowed, agent_unit="iot-jobs-agent.service"):
    return ServicesSettings(allowed=allowed, systemctl=(str(systemctl),), agent_unit=agent_unit)


def commands(*allowed, users=()):
    return RunCommandSettings(enabled=True, allowed_commands=allowed, allowed_users=users)


# services


@pytest.mark.parametrize(
    "template, verb",
    [
        ("AWS-Start-Application", "start"),
        ("AWS-Stop-Application", "stop"),
        ("AWS-Restart-Application", "restart"),
    ],
)
def test_service_template_runs_systemctl_with_the_verb_and_units(
    tmp_path, systemctl, template, verb
):
    handler = make_handler(tmp_path / "state", services=services(systemctl, "nginx", "myapp-*"))
    details = handler(document(template, services="nginx myapp-web.service"), make_job())
    assert standin_calls(systemctl) == [[verb, "--", "nginx.service", "myapp-web.service"]]
    assert details["result"] == "1 of 1 steps succeeded"


def test_service_not_allowed_is_rejected_before_anything_runs(tmp_path, systemctl):
    handler = make_handler(tmp_path / "state", services=services(systemctl, "nginx"))
    with pytest.raises(JobRejected, match="'sshd.service' is not in \\[services\\] allowed") as e:
        handler(document("AWS-Stop-Application", services="nginx sshd"), make_job())
    assert e.value.code == "NOT_ALLOWED"
    assert standin_calls(systemctl) == []


def test_services_are_rejected_when_none_are_allowed(tmp_path, systemctl):
    handler = make_handler(tmp_path / "state", services=services(systemctl))
    with pytest.raises(JobRejected, match="list them in \\[services\\] allowed"):
        handler(document("AWS-Start-Application", services="nginx"), make_job())


@pytest.mark.parametrize(
    "services_text",
    ["nginx;reboot", "--now", "nginx$(reboot)", "../../etc/passwd", "a|b", "`id`"],
)
def test_service_name_injection_is_rejected(tmp_path, systemctl, services_text):
    handler = make_handler(tmp_path / "state", services=services(systemctl, "*"))
    with pytest.raises(JobRejected, match="is not a systemd unit name"):
        handler(document("AWS-Start-Application", services=services_text), make_job())
    assert standin_calls(systemctl) == []


def test_failing_systemctl_fails_the_job_with_its_stderr(tmp_path):
    failing = make_standin(tmp_path / "bin", "systemctl", exit_code=5, output="Unit not found.")
    handler = make_handler(tmp_path / "state", services=services(failing, "nginx"))
    with pytest.raises(JobFailed) as raised:
        handler(document("AWS-Start-Application", services="nginx"), make_job())
    assert "exit status 5" in raised.value.reason
    assert raised.value.details["stderr"] == "Unit not found."
    assert raised.value.code == "SERVICE_FAILED"


def test_stopping_the_agents_own_service_is_rejected(tmp_path, systemctl):
    handler = make_handler(tmp_path / "state", services=services(systemctl, "*"))
    with pytest.raises(JobRejected, match="would stop this agent"):
        handler(document("AWS-Stop-Application", services="iot-jobs-agent"), make_job())


def test_restarting_the_agents_own_service_is_queued_last_and_succeeds(tmp_path, systemctl):
    handler = make_handler(tmp_path / "state", services=services(systemctl, "*"))
    doc = document("AWS-Restart-Application", services="iot-jobs-agent nginx")
    details = handler(doc, make_job())
    assert standin_calls(systemctl) == [
        ["restart", "--", "nginx.service"],
        ["restart", "--no-block", "--", "iot-jobs-agent.service"],
    ]
    assert "queued" in details["steps0"]


def test_restart_of_the_agent_that_stops_it_before_systemctl_returns_is_handed_over(tmp_path):
    # systemd may stop the agent (and the systemctl it runs) before systemctl returns: the
    # restarted agent finishes the job instead of reporting it FAILED now.
    started = tmp_path / "started"
    blocking = tmp_path / "bin" / "systemctl"
    blocking.parent.mkdir()
    blocking.write_text(
        f"#!{PY}\nimport pathlib, time\npathlib.Path({str(started)!r}).touch()\ntime.sleep(30)\n"
    )
    blocking.chmod(0o755)
    state = tmp_path / "state"
    handler = make_handler(state, services=services(blocking, "*"))
    doc = document("AWS-Restart-Application", services="iot-jobs-agent")
    job = make_job()
    thread, outcome = run_in_thread(handler, doc, job)
    wait_for(started.exists, what="systemctl")
    job._request_stop(StopReason.AGENT_STOPPING)
    thread.join(15)
    assert [type(error) for error in outcome] == [JobHandedOver]
    details = handler(doc, make_job(attempt=2))
    assert "restarted" in details["steps0"]


def test_restart_of_the_agent_interrupted_before_reporting_is_not_repeated(tmp_path):
    # The restart killed the agent before it recorded the result: the new agent resumes the
    # job (attempt 2) and must not restart itself again (the device client looped here).
    state = tmp_path / "state"
    slow = make_standin(tmp_path / "bin", "systemctl")
    handler = make_handler(state, services=services(slow, "*"))
    doc = document("AWS-Restart-Application", services="iot-jobs-agent")
    progress = StepProgress.open(state, make_job(), doc)
    progress.current = "steps[0]"
    progress.data["steps[0]"] = {"agentRestartQueued": True}
    progress.save()
    details = handler(doc, make_job(attempt=2))
    assert standin_calls(slow) == []
    assert "restarted" in details["steps0"]


# reboot


def reboot_settings(tmp_path, boot_id="boot-1", exit_code=0, wait_seconds=0.2):
    boot_file = tmp_path / "boot_id"
    boot_file.write_text(boot_id + "\n")
    command = make_standin(tmp_path / "bin", "reboot", exit_code=exit_code)
    return RebootSettings(
        enabled=True, command=(str(command),), boot_id_file=boot_file, wait_seconds=wait_seconds
    )


def test_reboot_disabled_by_default_is_rejected(tmp_path):
    with pytest.raises(JobRejected, match="reboot is disabled"):
        make_handler(tmp_path / "state")(document("AWS-Reboot"), make_job())


def run_in_thread(handler, doc, job):
    """Call ``handler(doc, job)`` in a thread; ``outcome`` gets the exception it raised."""
    outcome = []

    def call():
        try:
            handler(doc, job)
        except Exception as error:  # the outcome under test
            outcome.append(error)

    thread = threading.Thread(target=call)
    thread.start()
    return thread, outcome


def saved_progress(state):
    return json.loads((state / "managed" / "job-1.json").read_text())


def test_reboot_records_the_boot_id_then_runs_the_command(tmp_path):
    # The reboot stops the agent (SIGTERM): the job is handed over to the next start, which
    # judges it by the saved boot id; nothing is reported now.
    settings = reboot_settings(tmp_path, wait_seconds=30)
    handler = make_handler(tmp_path / "state", reboot=settings)
    job = make_job()
    thread, outcome = run_in_thread(handler, document("AWS-Reboot"), job)
    wait_for(lambda: standin_calls(tmp_path / "bin" / "reboot"), what="the reboot command")
    assert saved_progress(tmp_path / "state")["data"]["steps[0]"] == {"bootId": "boot-1"}
    job._request_stop(StopReason.AGENT_STOPPING)  # what the reboot does to the agent
    thread.join(10)
    assert [type(error) for error in outcome] == [JobHandedOver]
    saved = saved_progress(tmp_path / "state")
    assert saved["current"] == "steps[0]"
    assert saved["data"]["steps[0]"] == {"bootId": "boot-1"}


def test_reboot_of_a_job_canceled_while_waiting_fails_with_stopped(tmp_path):
    handler = make_handler(tmp_path / "state", reboot=reboot_settings(tmp_path, wait_seconds=30))
    job = make_job()
    thread, outcome = run_in_thread(handler, document("AWS-Reboot"), job)
    wait_for(lambda: standin_calls(tmp_path / "bin" / "reboot"), what="the reboot command")
    job._request_stop(StopReason.SERVICE_ENDED, "the service canceled the job")
    thread.join(10)
    assert [type(error) for error in outcome] == [JobFailed]
    assert outcome[0].code == "STOPPED"


@pytest.mark.parametrize(
    "reason, raised",
    [(StopReason.AGENT_STOPPING, JobHandedOver), (StopReason.SERVICE_ENDED, JobFailed)],
)
def test_reboot_is_not_asked_for_when_the_job_is_already_stopping(tmp_path, reason, raised):
    handler = make_handler(tmp_path / "state", reboot=reboot_settings(tmp_path))
    job = make_job()
    job._request_stop(reason)
    with pytest.raises(raised):
        handler(document("AWS-Reboot"), job)
    assert standin_calls(tmp_path / "bin" / "reboot") == []


def test_reboot_command_ended_by_the_shutdown_hands_the_job_over_with_the_boot_id(tmp_path):
    # `reboot` may still run when the shutdown it started terminates it (and the agent).
    settings = reboot_settings(tmp_path)
    started, go = tmp_path / "started", tmp_path / "go"
    killed_by_shutdown = (
        "import os, pathlib, signal, time\n"
        f"pathlib.Path({str(started)!r}).touch()\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.02)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
    )
    settings = RebootSettings(
        enabled=True,
        command=(PY, "-c", killed_by_shutdown),
        boot_id_file=settings.boot_id_file,
        wait_seconds=0.2,
    )
    handler = make_handler(tmp_path / "state", reboot=settings)
    job = make_job()
    thread, outcome = run_in_thread(handler, document("AWS-Reboot"), job)
    wait_for(started.exists, what="the reboot command")
    job._request_stop(StopReason.AGENT_STOPPING)
    go.touch()
    thread.join(10)
    assert [type(error) for error in outcome] == [JobHandedOver]
    assert saved_progress(tmp_path / "state")["data"]["steps[0]"] == {"bootId": "boot-1"}


def test_reboot_without_a_reboot_fails_once_the_wait_is_over(tmp_path):
    handler = make_handler(tmp_path / "state", reboot=reboot_settings(tmp_path))
    with pytest.raises(JobFailed, match="did not reboot within 0.2 s") as raised:
        handler(document("AWS-Reboot"), make_job())
    assert raised.value.code == "NOT_REBOOTED"
    assert standin_calls(tmp_path / "bin" / "reboot") == [[]]


def saved_reboot(state, boot_id):
    doc = document("AWS-Reboot")
    progress = StepProgress.open(state, make_job(), doc)
    progress.current = "steps[0]"
    progress.data["steps[0]"] = {"bootId": boot_id}
    progress.save()
    return doc


def test_reboot_resumed_after_restart_with_a_new_boot_id_succeeds(tmp_path):
    handler = make_handler(tmp_path / "state", reboot=reboot_settings(tmp_path, "boot-2"))
    details = handler(saved_reboot(tmp_path / "state", "boot-1"), make_job(attempt=2))
    assert details["bootId"] == "boot-2"
    assert standin_calls(tmp_path / "bin" / "reboot") == []


def test_reboot_resumed_with_the_same_boot_id_fails(tmp_path):
    handler = make_handler(tmp_path / "state", reboot=reboot_settings(tmp_path, "boot-1"))
    with pytest.raises(JobFailed, match="did not reboot") as raised:
        handler(saved_reboot(tmp_path / "state", "boot-1"), make_job(attempt=2))
    assert raised.value.code == "NOT_REBOOTED"


def test_reboot_failing_command_fails_the_job(tmp_path):
    settings = reboot_settings(tmp_path, exit_code=1)
    handler = make_handler(tmp_path / "state", reboot=settings)
    with pytest.raises(JobFailed) as raised:
        handler(document("AWS-Reboot"), make_job())
    assert raised.value.code == "REBOOT_FAILED"


# Run-Command


def test_run_command_is_disabled_by_default(tmp_path):
    with pytest.raises(JobRejected, match="Run-Command is disabled"):
        make_handler(tmp_path / "state")(document("AWS-Run-Command", command="echo,hi"), make_job())


def test_run_command_runs_an_allowed_program_with_its_arguments(tmp_path):
    handler = make_handler(tmp_path / "state", run_command=commands("echo"))
    doc = document("AWS-Run-Command", command="echo,hello world,a\\,b")
    doc["includeStdOut"] = "true"
    details = handler(doc, make_job())
    assert details["stdout"] == "hello world a,b\n"


def test_stdout_is_left_out_without_include_stdout(tmp_path):
    handler = make_handler(tmp_path / "state", run_command=commands("echo"))
    details = handler(document("AWS-Run-Command", command="echo,secret"), make_job())
    assert "stdout" not in details


@pytest.mark.parametrize(
    "command",
    ["sh,-c,reboot", "bash,-c,id", "/bin/sh,-c,id", "rm,-rf,/tmp/x", "../../bin/sh,-c,id"],
)
def test_command_not_allowed_is_rejected(tmp_path, command):
    handler = make_handler(tmp_path / "state", run_command=commands("echo", "/bin/true"))
    with pytest.raises(JobRejected, match="not in \\[run_command\\] allowed_commands"):
        handler(document("AWS-Run-Command", command=command), make_job())


@pytest.mark.parametrize(
    "command",
    [
        "apt-get,install,-y,iot-jobs-agent",
        "dpkg,-i,/tmp/iot-jobs-agent_1.1.0_all.deb",
        "systemctl,restart,iot-jobs-agent.service",
        "INSTALL_SH",
    ],
)
def test_a_command_that_would_update_this_agent_is_refused(tmp_path, command):
    install_sh = str(AGENT_HOME / "systemd" / "install.sh")
    command = command.replace("INSTALL_SH", install_sh)
    handler = make_handler(
        tmp_path / "state",
        run_command=commands("apt-get", "dpkg", "systemctl", install_sh),
    )
    with pytest.raises(JobRejected, match="APT_UPDATE job for the iot-jobs-agent") as raised:
        handler(document("AWS-Run-Command", command=command), make_job())
    assert raised.value.code == "SELF_UPDATE"


def test_shell_syntax_in_arguments_reaches_the_program_as_text(tmp_path):
    marker = tmp_path / "injected"
    handler = make_handler(tmp_path / "state", run_command=commands("echo"))
    doc = document("AWS-Run-Command", command=f"echo,$(touch {marker});touch {marker}")
    doc["includeStdOut"] = True
    details = handler(doc, make_job())
    assert not marker.exists()
    assert details["stdout"].startswith("$(touch")


def test_failing_command_reports_exit_status_and_stderr(tmp_path):
    handler = make_handler(tmp_path / "state", run_command=commands(PY))
    doc = document("AWS-Run-Command", command=f"{PY},-c,import sys; sys.exit('boom')")
    with pytest.raises(JobFailed) as raised:
        handler(doc, make_job())
    assert "exit status 1" in raised.value.reason
    assert raised.value.details["stderr"] == "boom\n"
    assert "stdout" not in raised.value.details


def test_command_past_the_step_timeout_is_killed(tmp_path):
    handler = make_handler(tmp_path / "state", step_timeout_seconds=0.5, run_command=commands(PY))
    doc = document("AWS-Run-Command", command=f"{PY},-c,import time; time.sleep(30)")
    with pytest.raises(JobFailed) as raised:
        handler(doc, make_job())
    assert raised.value.code == "TIMEOUT"


def test_run_as_user_not_allowed_is_rejected(tmp_path):
    handler = make_handler(tmp_path / "state", run_command=commands("id"))
    with pytest.raises(JobRejected, match="runAsUser 'nobody' is not in"):
        handler(document("AWS-Run-Command", command="id", runAsUser="nobody"), make_job())


def test_run_as_user_drops_privileges_in_the_child(tmp_path):
    handler = make_handler(tmp_path / "state", run_command=commands("id", users=("nobody",)))
    doc = document("AWS-Run-Command", command="id,-un", runAsUser="nobody")
    doc["includeStdOut"] = "true"
    assert handler(doc, make_job())["stdout"] == "nobody\n"


def test_run_command_interrupted_by_a_restart_is_not_run_again(tmp_path):
    state = tmp_path / "state"
    handler = make_handler(state, run_command=commands("echo"))
    doc = document("AWS-Run-Command", command="echo,once")
    progress = StepProgress.open(state, make_job(), doc)
    progress.current = "steps[0]"
    progress.save()
    with pytest.raises(JobFailed, match="interrupted by an agent restart") as raised:
        handler(doc, make_job(attempt=2))
    assert raised.value.code == "INTERRUPTED"


# the steps runner


def two_steps(first: str, second: str, **first_options):
    doc = document("AWS-Run-Command", command=first)
    doc["steps"][0]["action"].update(first_options)
    doc["steps"].append(document("AWS-Run-Command", command=second)["steps"][0])
    return doc


def test_a_failed_step_ends_the_job(tmp_path):
    handler = make_handler(tmp_path / "state", run_command=commands("false", "touch"))
    marker = tmp_path / "second-ran"
    with pytest.raises(JobFailed) as raised:
        handler(two_steps("false", f"touch,{marker}"), make_job())
    assert raised.value.details["failedStep"] == "steps[0] (Run-Command)"
    assert not marker.exists()


def test_ignore_step_failure_goes_on_to_the_next_step(tmp_path):
    handler = make_handler(tmp_path / "state", run_command=commands("false", "touch"))
    marker = tmp_path / "second-ran"
    doc = two_steps("false", f"touch,{marker}", ignoreStepFailure="true")
    details = handler(doc, make_job())
    assert marker.exists()
    assert details["result"] == "1 of 2 steps succeeded"
    assert "steps[0] (Run-Command): false: exit status 1" in details["ignoredFailures"]


def test_final_step_runs_after_all_steps_succeeded(tmp_path):
    handler = make_handler(tmp_path / "state", run_command=commands("true", "touch"))
    marker = tmp_path / "final-ran"
    doc = document("AWS-Run-Command", command="true")
    doc["finalStep"] = document("AWS-Run-Command", command=f"touch,{marker}")["steps"][0]
    handler(doc, make_job())
    assert marker.exists()


def test_final_step_does_not_run_after_a_failed_step(tmp_path):
    handler = make_handler(tmp_path / "state", run_command=commands("false", "touch"))
    marker = tmp_path / "final-ran"
    doc = document("AWS-Run-Command", command="false")
    doc["finalStep"] = document("AWS-Run-Command", command=f"touch,{marker}")["steps"][0]
    with pytest.raises(JobFailed):
        handler(doc, make_job())
    assert not marker.exists()


def test_bad_later_step_rejects_the_job_before_the_first_step_runs(tmp_path):
    handler = make_handler(tmp_path / "state", run_command=commands("touch"))
    marker = tmp_path / "first-ran"
    with pytest.raises(JobRejected, match="steps\\[1\\]"):
        handler(two_steps(f"touch,{marker}", "sh,-c,id"), make_job())
    assert not marker.exists()


def test_handler_this_agent_does_not_ship_is_rejected(tmp_path):
    doc = document("AWS-Reboot")
    doc["steps"][0]["action"]["input"]["handler"] = "my-own.sh"
    with pytest.raises(JobRejected, match="'my-own.sh' is not built into this agent") as raised:
        make_handler(tmp_path / "state")(doc, make_job())
    assert raised.value.code == "NOT_SUPPORTED"


def test_handler_path_other_than_default_is_rejected(tmp_path, systemctl):
    handler = make_handler(tmp_path / "state", services=services(systemctl, "nginx"))
    doc = document("AWS-Start-Application", services="nginx", pathToHandler="/tmp/evil")
    with pytest.raises(JobRejected, match="path '/tmp/evil'"):
        handler(doc, make_job())
    assert standin_calls(systemctl) == []


def test_run_as_another_user_is_rejected_for_system_actions(tmp_path, systemctl):
    handler = make_handler(tmp_path / "state", services=services(systemctl, "nginx"))
    doc = document("AWS-Start-Application", services="nginx", runAsUser="nobody")
    with pytest.raises(JobRejected, match="runs as the agent's own user"):
        handler(doc, make_job())


def test_old_operation_form_runs_the_built_in_action(tmp_path, systemctl):
    handler = make_handler(tmp_path / "state", services=services(systemctl, "nginx"))
    handler({"operation": "restart-services.sh", "args": ["nginx"]}, make_job())
    assert standin_calls(systemctl) == [["restart", "--", "nginx.service"]]
