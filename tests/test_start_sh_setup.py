"""scripts/setup.sh, shared by start.sh, run-tests.sh and install.sh: Debian packages and venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from start_sh_fixtures import REPO_ROOT

SETUP = REPO_ROOT / "scripts" / "setup.sh"

pytestmark = pytest.mark.timeout(120)


def setup_sh(script: str, *, as_nobody: bool = False, setup: os.PathLike = SETUP):
    """Run ``script`` in bash after sourcing scripts/setup.sh; output captured as text."""
    command = ["bash", "-c", f'. "{setup}"; {script}']
    if as_nobody:
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
    return subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


def test_missing_packages_are_listed_and_installed_ones_are_not():
    result = setup_sh("missing_debian_packages dpkg no-such-package-xyz")
    assert result.stdout.strip() == "no-such-package-xyz"


def test_installed_packages_need_no_install():
    result = setup_sh("ensure_debian_packages dpkg bash")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run the check as another user",
)
def test_missing_packages_as_non_root_print_the_apt_command_and_exit_2():
    # The checkout may sit below a folder only root can enter (/root): give nobody a copy.
    folder = tempfile.mkdtemp(prefix="setup-sh-")
    try:
        os.chmod(folder, 0o755)
        copy = shutil.copy(SETUP, folder)
        result = setup_sh(
            "ensure_debian_packages dpkg no-such-package-xyz", as_nobody=True, setup=copy
        )
    finally:
        shutil.rmtree(folder)
    assert result.returncode == 2
    assert (
        "sudo apt-get update && sudo apt-get install -y --no-install-recommends "
        "no-such-package-xyz" in result.stderr
    )


@pytest.fixture
def requirements(tmp_path) -> Path:
    """A requirements file pip can install offline (nothing in it but a comment)."""
    path = tmp_path / "requirements.txt"
    path.write_text("# version 1\n")
    return path


def test_venv_is_made_with_system_site_packages_and_sees_python_apt(tmp_path, requirements):
    venv = tmp_path / "venv"
    result = setup_sh(f'ensure_venv "{venv}" "{requirements}"')
    assert result.returncode == 0, result.stderr
    assert "Creating the virtual environment" in result.stdout
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    probe = subprocess.run([str(venv / "bin/python"), "-c", "import apt"], check=False)
    assert probe.returncode == 0


def test_requirements_are_installed_again_only_when_they_change(tmp_path, requirements):
    venv = tmp_path / "venv"
    first = setup_sh(f'ensure_venv "{venv}" "{requirements}"')
    assert "Installing Python requirements" in first.stdout, first.stderr
    unchanged = setup_sh(f'ensure_venv "{venv}" "{requirements}"')
    assert (unchanged.returncode, unchanged.stdout) == (0, "")
    requirements.write_text("# version 2\n")
    changed = setup_sh(f'ensure_venv "{venv}" "{requirements}"')
    assert "Installing Python requirements" in changed.stdout
    assert "Creating the virtual environment" not in changed.stdout


def test_venv_without_system_site_packages_is_rebuilt(tmp_path, requirements):
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    result = setup_sh(f'ensure_venv "{venv}" "{requirements}"')
    assert "Creating the virtual environment" in result.stdout, result.stderr
    probe = subprocess.run([str(venv / "bin/python"), "-c", "import apt"], check=False)
    assert probe.returncode == 0
