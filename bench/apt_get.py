"""The direct ``apt-get`` baseline: the same package, from the same repository, into a root
laid out like the APT handler's throwaway roots (``local_jobs/apt_repo.py``).

apt-get is pointed at the root the way ``apt.Cache(rootdir=ROOT)`` points python-apt at it:
the root's own apt.conf and apt.conf.d files, ``Dir=ROOT``, the root's dpkg status file and
the root's dpkg wrapper; and the host's dpkg and update hooks cleared, as the APT worker
clears them. Commands are argument lists, never a shell.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import List

# The host's hooks (debconf pre-install, docker-clean post-invoke, packagekit after update)
# would run against the host, not the root: apt-get must skip them like the worker does.
CLEAR_HOST_HOOKS = """\
#clear DPkg::Pre-Install-Pkgs;
#clear DPkg::Pre-Invoke;
#clear DPkg::Post-Invoke;
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
"""


class AptGetError(RuntimeError):
    """apt-get exited non-zero; the message holds the command's last output lines."""


def apt_get_command(root: os.PathLike, hooks_file: os.PathLike, *args: str) -> List[str]:
    """``apt-get`` arguments operating on ``root`` instead of the host."""
    root = Path(root).resolve()
    configs: List[Path] = []
    if (root / "etc/apt/apt.conf").is_file():
        configs.append(root / "etc/apt/apt.conf")
    parts = root / "etc/apt/apt.conf.d"
    if parts.is_dir():
        configs.extend(sorted(path for path in parts.iterdir() if path.is_file()))
    command = ["apt-get", "-q", "-c", str(hooks_file)]
    for config in configs:
        command += ["-c", str(config)]
    command += [
        "-o", f"Dir={root}",
        "-o", f"Dir::State::status={root}/var/lib/dpkg/status",
        "-o", f"Dir::Bin::dpkg={root}/usr/bin/dpkg",
    ]
    return command + list(args)


def write_hooks_file(folder: os.PathLike) -> Path:
    """Write the hook-clearing apt configuration into ``folder``; returns its path."""
    path = Path(folder) / "bench-clear-host-hooks.conf"
    path.write_text(CLEAR_HOST_HOOKS)
    return path


def run_apt_get(root: os.PathLike, hooks_file: os.PathLike, *args: str) -> float:
    """Run apt-get on ``root``; returns its wall time in seconds; AptGetError if it fails."""
    command = apt_get_command(root, hooks_file, *args)
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    started = time.perf_counter()
    result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=environment, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        tail = result.stdout.decode(errors="replace").strip().splitlines()[-5:]
        raise AptGetError(f"{' '.join(command)} exited {result.returncode}: {' | '.join(tail)}")
    return elapsed


def installed_version(root: os.PathLike, package: str) -> str:
    """The version of ``package`` dpkg's status file in ``root`` says is installed, or ''."""
    status = Path(root) / "var/lib/dpkg/status"
    for stanza in status.read_text().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines()
                      if ": " in line and not line.startswith(" "))
        if fields.get("Package") == package and fields.get("Status", "").endswith(" installed"):
            return fields.get("Version", "")
    return ""
