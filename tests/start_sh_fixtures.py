"""Helpers for the start.sh tests: a checkout of this repository the test may change."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Dict, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
# Never linked into a checkout: what the user makes (settings, demo state) and VCS data.
_NOT_LINKED = {".git", ".local", "settings.conf", "state", ".pytest_cache", ".ruff_cache"}


def make_checkout(folder: Path, *, share_venv: bool = True) -> Path:
    """A folder that looks like a fresh clone: a symlink to each entry of the repository.

    With ``share_venv`` the repository's .venv is linked too (no environment to build);
    otherwise start.sh makes its own .venv there.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for entry in REPO_ROOT.iterdir():
        if entry.name in _NOT_LINKED or (entry.name == ".venv" and not share_venv):
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


def run_start_sh(
    checkout: Path,
    args: Sequence[str] = (),
    *,
    env: Optional[Dict[str, str]] = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run ``checkout/start.sh ARGS`` to the end, output captured as text."""
    return subprocess.run(
        ["bash", str(checkout / "start.sh"), *args],
        cwd=str(checkout),
        env=dict(os.environ, **(env or {})),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
