"""The release tier says plainly why it does not run where it cannot (run-tests.sh runs it
with the whole suite, on machines that may lack root, systemd-nspawn or debootstrap)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent / "run.sh"


def run_tier_with_only(tmp_path: Path, tools) -> subprocess.CompletedProcess:
    """tests/release/run.sh with a PATH holding only ``tools`` (from this machine)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("id", "dirname", *tools):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    return subprocess.run(
        ["/bin/bash", str(RUN)],
        env=dict(os.environ, PATH=str(bin_dir)),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_without_systemd_nspawn_the_tier_says_so_and_skips(tmp_path):
    result = run_tier_with_only(tmp_path, ["debootstrap"])
    assert result.returncode == 0, result.stderr
    if os.geteuid() == 0:
        assert "release tier SKIPPED: systemd-nspawn is missing" in result.stdout
    else:
        assert "release tier SKIPPED: it needs root" in result.stdout


@pytest.mark.skipif(not shutil.which("systemd-nspawn"), reason="this machine has no systemd-nspawn")
def test_without_debootstrap_the_tier_says_so_and_skips(tmp_path):
    result = run_tier_with_only(tmp_path, ["systemd-nspawn"])
    assert result.returncode == 0, result.stderr
    assert "release tier SKIPPED:" in result.stdout
    assert "debootstrap is missing" in result.stdout or "it needs root" in result.stdout
