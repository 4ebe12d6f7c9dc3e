"""``./localjobs up``: one command starts everything, writes endpoints.json, stops cleanly."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from stack_helpers import process_running
from start_sh_fixtures import make_checkout

from local_jobs.apt_repo import AptRoot

pytestmark = pytest.mark.timeout(90)

LOCALJOBS = Path(__file__).resolve().parent.parent / "localjobs"


def _children(pid: int):
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


class Up:
    """``./localjobs up`` running as a child process."""

    def __init__(self, directory: Path, *args: str, localjobs: Path = LOCALJOBS):
        self.directory = directory
        self.endpoints = directory / "endpoints.json"
        started = time.time_ns()
        self.process = subprocess.Popen(
            [str(localjobs), "up", "--dir", str(directory), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not (self.endpoints.exists() and self.endpoints.stat().st_mtime_ns >= started):
            if self.process.poll() is not None:
                raise AssertionError(f"localjobs up exited: {self.process.stdout.read()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("no endpoints.json in 30s")
            time.sleep(0.05)
        self.children = _children(self.process.pid)

    def stop(self, sig=signal.SIGTERM) -> str:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            out, _ = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return out


def test_up_writes_endpoints_and_ready_settings_for_each_thing(tmp_path):
    up = Up(tmp_path / "lj", "--thing", "dev-a", "--thing", "dev-b", "--minute-seconds", "2")
    try:
        endpoints = json.loads(up.endpoints.read_text())
        assert endpoints["mqtt_host"] == "localhost"
        assert endpoints["control_url"].startswith("http://127.0.0.1:")
        assert Path(endpoints["ca_path"]).exists()
        assert set(endpoints["things"]) == {"dev-a", "dev-b"}
        for name, thing in endpoints["things"].items():
            assert Path(thing["certificate"]).exists() and Path(thing["private_key"]).exists()
            assert thing["settings_path"] == str(up.directory / name / "settings.conf")
            settings = configparser.ConfigParser()
            settings.read(thing["settings_path"])
            assert settings["connection"]["thing_name"] == name
            assert settings["connection"]["port"] == str(endpoints["mqtt_port"])
            assert settings["connection"]["root_ca"] == endpoints["ca_path"]
            assert settings["agent"]["state_dir"] == str(up.directory / name / "state")
    finally:
        out = up.stop()
    assert up.process.returncode == 0, out
    assert "aws iot create-job --endpoint-url http://127.0.0.1:" in out
    assert f"localhost:{endpoints['mqtt_port']}" in out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_up_stops_broker_and_service_on_signal(tmp_path, sig):
    up = Up(tmp_path / "lj", "--thing", "dev-a")
    assert len(up.children) == 3  # mosquitto, the local S3 and the Jobs service
    up.stop(sig)
    assert up.process.returncode == 0
    deadline = time.monotonic() + 10
    while any(process_running(pid) for pid in up.children):
        assert time.monotonic() < deadline, "a child outlived localjobs up"
        time.sleep(0.05)


def test_up_again_reuses_certificates_and_ports(tmp_path):
    first = Up(tmp_path / "lj", "--thing", "dev-a")
    before = json.loads(first.endpoints.read_text())
    ca = Path(before["ca_path"]).read_bytes()
    first.stop()
    second = Up(tmp_path / "lj", "--thing", "dev-a")
    try:
        after = json.loads(second.endpoints.read_text())
    finally:
        second.stop()
    assert Path(after["ca_path"]).read_bytes() == ca
    assert after["mqtt_port"] == before["mqtt_port"]
    assert after["control_url"] == before["control_url"]


def test_up_with_an_invalid_thing_name_fails_with_a_clear_message(tmp_path):
    result = subprocess.run(
        [str(LOCALJOBS), "up", "--dir", str(tmp_path), "--thing", "a/b"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "invalid thing name 'a/b'" in result.stderr


def printed_example(output: str) -> Tuple[Dict[str, str], List[List[str]]]:
    """The environment and the commands ``./localjobs up`` printed, as a user would run them."""
    block = output.split("Queue a job and run the agent", 1)[1].split("Local S3 (")[0]
    lines = [line.strip() for line in block.splitlines()[1:] if line.startswith("  ")]
    lines = [line for line in lines if not line.startswith("(")]
    export, commands = lines[0], lines[1:]
    assert export.startswith("export ")
    env = dict(os.environ)
    env.update(item.split("=", 1) for item in shlex.split(export)[1:])
    return env, [shlex.split(command) for command in commands]


@pytest.mark.timeout(240)
def test_the_printed_example_runs_as_printed_into_the_throwaway_apt_root(tmp_path):
    checkout = make_checkout(tmp_path / "checkout")
    up = Up(tmp_path / "lj", "--thing", "dev-a", localjobs=checkout / "localjobs")
    agent = None
    try:
        output = ""
        for line in up.process.stdout:
            output += line
            if line.startswith("Ctrl-C stops everything"):
                break
        env, (create, run_agent, describe) = printed_example(output)
        assert Path(create[0]).name == "aws" and Path(create[0]).is_file()
        subprocess.run(create, cwd=str(tmp_path), env=env, check=True, timeout=60)
        agent = subprocess.Popen(
            run_agent, cwd=str(tmp_path), env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 150
        status = None
        while time.monotonic() < deadline and status not in ("SUCCEEDED", "FAILED", "REJECTED"):
            answer = subprocess.run(
                describe, cwd=str(tmp_path), env=env, capture_output=True, check=True, timeout=60
            )
            status = json.loads(answer.stdout)["execution"]["status"]
            time.sleep(0.2)
        assert status == "SUCCEEDED"
        s3_block = output.split("Local S3 (", 1)[1].split("Ctrl-C stops everything")[0]
        echo, *s3_lines = [
            shlex.split(line) for line in s3_block.splitlines()[1:] if line.startswith("  ")
            and not line.startswith("  (")
        ]
        assert echo[0] == "echo" and echo[2:] == [">", "job.json"]
        (tmp_path / "job.json").write_text(echo[1] + "\n")
        for command in s3_lines:
            subprocess.run(command, cwd=str(tmp_path), env=env, check=True, timeout=60)
        assert run_agent[0].endswith("start.sh")
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=60)
        up.stop()
    root = up.directory / "apt.d" / "root"
    assert AptRoot(root).installed_version("cowsay") is not None
    assert "this machine's packages are never touched" in output
    assert "./localjobs up --host-apt" in output


def test_host_apt_settings_have_no_throwaway_root(tmp_path):
    first = Up(tmp_path / "lj", "--thing", "dev-a")
    first.stop()
    settings = configparser.ConfigParser()
    settings.read(tmp_path / "lj" / "dev-a" / "settings.conf")
    assert settings["apt"]["root_dir"] == str(tmp_path / "lj" / "apt.d" / "root")
    second = Up(tmp_path / "lj", "--thing", "dev-a", "--host-apt")
    out = second.stop()
    settings = configparser.ConfigParser()
    settings.read(tmp_path / "lj" / "dev-a" / "settings.conf")
    assert not settings.has_option("apt", "root_dir")
    assert "THIS machine's packages" in out
