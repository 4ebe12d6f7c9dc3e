"""./start.sh without --local: environment checks, settings messages, and exec of the agent."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from start_sh_fixtures import make_checkout, run_start_sh
from systemd_fixtures import NotifySocket

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def checkout(tmp_path) -> Path:
    return make_checkout(tmp_path / "checkout")


def test_without_settings_file_it_says_how_to_make_one(checkout):
    result = run_start_sh(checkout)
    assert result.returncode == 2
    assert f"{checkout}/settings.conf does not exist" in result.stderr
    assert "cp settings.conf.example settings.conf" in result.stderr
    assert "./start.sh --local" in result.stderr


def test_broken_settings_file_is_reported_with_file_section_and_key(checkout):
    settings = checkout / "settings.conf"
    example = (checkout / "settings.conf.example").read_text()
    settings.write_text(example.replace("step_timeout_minutes = 10", "step_timeout_minutes = soon"))
    result = run_start_sh(checkout)
    assert result.returncode == 2
    assert (
        f"{settings}: [agent] step_timeout_minutes: expected a whole number, got 'soon'"
        in result.stderr
    )


def test_extra_arguments_are_passed_to_the_agent(checkout, stack):
    settings = stack.thing("thing-1").settings_path
    result = run_start_sh(checkout, ["--config", str(settings), "--check-config"])
    assert result.returncode == 0, result.stderr
    assert f"{settings}: settings are valid" in result.stdout


def test_start_sh_execs_the_agent_so_signals_reach_it(checkout, stack):
    sock = NotifySocket()
    settings = stack.thing("thing-1").settings_path
    process = subprocess.Popen(
        ["bash", str(checkout / "start.sh"), "-c", str(settings)],
        cwd=str(checkout),
        env=dict(os.environ, NOTIFY_SOCKET=sock.path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        sock.wait_for("READY=1", timeout=60)
        # Same process: bash replaced itself with the agent.
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert any(part.endswith(b"jobs_agent.py") for part in cmdline), cmdline
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        sock.close()
    assert process.returncode == 0, stderr.decode(errors="replace")


def _python_without_apt():
    for candidate in (shutil.which("python3"), shutil.which("python")):
        if not candidate or os.path.realpath(candidate).startswith("/usr/bin/"):
            continue
        probe = subprocess.run(
            [candidate, "-c", "import apt_pkg"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode != 0:
            return candidate
    return None


PYTHON_WITHOUT_APT = _python_without_apt()


@pytest.mark.skipif(
    PYTHON_WITHOUT_APT is None,
    reason="no Python without python3-apt on this machine to stand for a system without it",
)
def test_missing_python_apt_is_explained_with_the_install_command(tmp_path):
    checkout = make_checkout(tmp_path / "checkout", share_venv=False)
    result = run_start_sh(checkout, env={"SYSTEM_PYTHON": PYTHON_WITHOUT_APT}, timeout=170)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "python3-apt is not importable" in result.stderr
    assert "sudo apt-get install -y python3-apt" in result.stderr


def test_help_lists_every_mode(checkout):
    result = run_start_sh(checkout, ["--help"])
    assert result.returncode == 0, result.stderr
    for mode in ("--local", "--local --demo", "--check-config", "-c FILE", "--log-level", "status"):
        assert f"./start.sh {mode}" in result.stdout


def test_the_readme_section_named_without_settings_exists(checkout):
    result = run_start_sh(checkout)
    section = re.search(r'README\.md, "([^"]+)"', result.stderr).group(1)
    assert f"## {section}\n" in (checkout / "README.md").read_text()
