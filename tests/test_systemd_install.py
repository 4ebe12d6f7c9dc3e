"""systemd/install.sh run for real, below a throwaway root (``--root``): files, modes, reruns."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from systemd_fixtures import REPO_ROOT, NotifySocket

INSTALL = str(Path(REPO_ROOT) / "systemd" / "install.sh")

pytestmark = pytest.mark.timeout(300)


def install(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", INSTALL, "--root", str(root), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """One installation shared by the tests that only look at it."""
    root = tmp_path_factory.mktemp("installed")
    result = install(root)
    assert result.returncode == 0, result.stdout + result.stderr
    return root


def test_install_puts_code_settings_state_and_unit_in_their_places(installed):
    assert (installed / "opt/iot-jobs-agent/agent/systemd_notify.py").is_file()
    assert (installed / "opt/iot-jobs-agent/venv/bin/python").exists()
    assert (installed / "etc/iot-jobs-agent/settings.conf").is_file()
    assert (installed / "var/lib/iot-jobs-agent").is_dir()
    unit = installed / "etc/systemd/system/iot-jobs-agent.service"
    assert unit.read_text() == (Path(REPO_ROOT) / "systemd/iot-jobs-agent.service").read_text()


def test_install_copies_the_agent_but_not_the_local_service_tests_or_benchmarks(installed):
    code = installed / "opt/iot-jobs-agent"
    assert (code / "jobs_agent.py").is_file() == (Path(REPO_ROOT) / "jobs_agent.py").is_file()
    for absent in ("local_jobs", "tests", "bench", ".venv", ".git"):
        assert not (code / absent).exists(), absent


def test_install_compiles_the_agent_with_the_installed_python(installed):
    code = installed / "opt/iot-jobs-agent"
    tag = subprocess.run(
        [str(code / "venv/bin/python"), "-c", "import sys; print(sys.implementation.cache_tag)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    modules = list(code.glob("agent/**/*.py")) + list(code.glob("*.py"))
    assert modules
    for module in modules:
        assert (module.parent / "__pycache__" / f"{module.stem}.{tag}.pyc").is_file(), module


def test_install_keeps_settings_and_state_private(installed):
    assert mode(installed / "etc/iot-jobs-agent") == 0o750
    assert mode(installed / "etc/iot-jobs-agent/certs") == 0o700
    assert mode(installed / "etc/iot-jobs-agent/settings.conf") == 0o600
    assert mode(installed / "var/lib/iot-jobs-agent") == 0o700


def test_installed_settings_template_keeps_state_in_var_lib(installed):
    text = (installed / "etc/iot-jobs-agent/settings.conf").read_text()
    assert "\nstate_dir = /var/lib/iot-jobs-agent\n" in text


def test_installed_venv_sees_python_apt_and_the_requirements(installed):
    python = installed / "opt/iot-jobs-agent/venv/bin/python"
    result = subprocess.run(
        [str(python), "-c", "import apt, apt_pkg, AWSIoTPythonSDK"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_second_install_keeps_edited_settings_and_skips_pip(tmp_path):
    assert install(tmp_path).returncode == 0
    settings = tmp_path / "etc/iot-jobs-agent/settings.conf"
    settings.write_text("[connection]\nendpoint = mine.example.com\n")
    again = install(tmp_path)
    assert again.returncode == 0, again.stderr
    assert settings.read_text() == "[connection]\nendpoint = mine.example.com\n"
    assert "Settings kept" in again.stdout
    assert "Installing Python requirements" not in again.stdout
    assert "Unit unchanged" in again.stdout


def test_uninstall_removes_code_and_unit_but_keeps_settings_and_state(tmp_path):
    assert install(tmp_path).returncode == 0
    result = install(tmp_path, "--uninstall")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "opt/iot-jobs-agent").exists()
    assert not (tmp_path / "etc/systemd/system/iot-jobs-agent.service").exists()
    assert (tmp_path / "etc/iot-jobs-agent/settings.conf").exists()
    assert (tmp_path / "var/lib/iot-jobs-agent").is_dir()


def test_uninstall_purge_removes_settings_and_state_too(tmp_path):
    assert install(tmp_path).returncode == 0
    result = install(tmp_path, "--uninstall", "--purge")
    assert result.returncode == 0, result.stderr
    for gone in ("opt/iot-jobs-agent", "etc/iot-jobs-agent", "var/lib/iot-jobs-agent"):
        assert not (tmp_path / gone).exists(), gone


def test_uninstall_of_nothing_succeeds(tmp_path):
    result = install(tmp_path, "--uninstall")
    assert result.returncode == 0, result.stderr


def test_unknown_argument_is_refused_with_usage(tmp_path):
    result = install(tmp_path, "--frobnicate")
    assert result.returncode == 2
    assert "unknown argument: --frobnicate" in result.stderr
    assert "--uninstall" in result.stderr


def test_installed_agent_runs_from_its_venv_and_reports_ready(installed, stack):
    """The unit's ExecStart, below the install root, connects to the local stack: READY=1."""
    code = installed / "opt/iot-jobs-agent"
    sock = NotifySocket()
    env = dict(os.environ, NOTIFY_SOCKET=sock.path)
    settings = stack.thing("thing-1").settings_path
    agent = subprocess.Popen(
        [str(code / "venv/bin/python"), str(code / "jobs_agent.py"), "--config", str(settings)],
        cwd=str(code),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        sock.wait_for("READY=1", timeout=30)
    finally:
        agent.terminate()
        _, stderr = agent.communicate(timeout=60)
        sock.close()
    assert agent.returncode == 0, stderr.decode(errors="replace")
