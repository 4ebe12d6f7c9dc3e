"""./start.sh --local and --local --demo, end to end: real stack, real agent, real apt root."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import List

import pytest
from start_sh_fixtures import make_checkout, run_start_sh

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def checkout(tmp_path) -> Path:
    return make_checkout(tmp_path / "checkout")


def test_local_demo_runs_one_apt_job_to_succeeded_and_exits_0(checkout):
    result = run_start_sh(checkout, ["--local", "--demo"], timeout=220)
    assert result.returncode == 0, result.stdout + result.stderr
    transitions = result.stdout.split("Status transitions", 1)[1]
    assert "QUEUED" in transitions
    assert "SUCCEEDED" in transitions
    assert "Final statusDetails:" in result.stdout
    assert "Demo SUCCEEDED: dpkg in the demo root" in result.stdout
    assert (checkout / ".local" / "demo" / "agent.log").exists()


def printed_aws_commands(output: str) -> List[List[str]]:
    """The AWS CLI commands start.sh --local printed, as argument lists."""
    block = output.split("Create a job from another terminal", 1)[1].split("or with boto3")[0]
    joined = block.replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if ".venv/bin/aws" in line]


def test_local_prints_aws_cli_commands_that_run_a_job_through_the_agent(checkout):
    process = subprocess.Popen(
        ["bash", str(checkout / "start.sh"), "--local"],
        cwd=str(checkout),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    output = ""
    try:
        for line in process.stdout:
            output += line
            if line.startswith("Ctrl-C stops"):
                break
        create, describe = printed_aws_commands(output)
        env = dict(os.environ, AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local")
        env["AWS_DEFAULT_REGION"] = "us-east-1"
        subprocess.run(create, cwd=str(checkout), env=env, check=True, timeout=60)
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and status not in ("SUCCEEDED", "FAILED", "REJECTED"):
            answer = subprocess.run(
                describe, cwd=str(checkout), env=env, capture_output=True, check=True, timeout=60
            )
            status = json.loads(answer.stdout)["execution"]["status"]
            time.sleep(0.2)
        assert status == "SUCCEEDED"
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert "Local Jobs service stopped." in rest


def printed_mqtt_port(checkout: Path) -> int:
    """Run ``start.sh --local`` until it is ready, stop it, and return the MQTT port it used."""
    process = subprocess.Popen(
        ["bash", str(checkout / "start.sh"), "--local"],
        cwd=str(checkout),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    port = None
    try:
        for line in process.stdout:
            if line.strip().startswith("MQTT broker"):
                port = int(line.split("localhost:", 1)[1].split()[0])
            if line.startswith("Ctrl-C stops"):
                break
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert port is not None
    return port


def test_local_reuses_its_ports_while_they_are_free(checkout):
    first = printed_mqtt_port(checkout)
    assert printed_mqtt_port(checkout) == first
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first))
        taken.listen()
        assert printed_mqtt_port(checkout) != first
