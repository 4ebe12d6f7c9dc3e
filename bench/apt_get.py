"""The direct ``apt-get`` baseline: the same package, from the same repository, into a root
identical to the agent's (a copy of one ``local_jobs.apt_repo`` root).

apt-get is pointed at the root the way ``apt.Cache(rootdir=ROOT)`` points python-apt at it:
the root's own apt.conf (which clears the host's dpkg and update hooks) and apt.conf.d files,
``Dir=ROOT``, the root's dpkg status file and the root's dpkg wrapper. Commands are argument
lists, never a shell.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import List


class AptGetError(RuntimeError):
    """apt-get exited non-zero; the message holds the command's last output lines."""


def apt_get_command(root: os.PathLike, *args: str) -> List[str]:
    """``apt-get`` arguments operating on ``root`` instead of the host."""
    root = Path(root).resolve()
    configs: List[Path] = []
    if (root / "etc/apt/apt.conf").is_file():
        configs.append(root / "etc/apt/apt.conf")
    parts = root / "etc/apt/apt.conf.d"
    if parts.is_dir():
        configs.extend(sorted(path for path in parts.iterdir() if path.is_file()))
    command = ["apt-get", "-q"]
    for config in configs:
        command += ["-c", str(config)]
    command += [
        "-o", f"Dir={root}",
        "-o", f"Dir::State::status={root}/var/lib/dpkg/status",
        "-o", f"Dir::Bin::dpkg={root}/usr/bin/dpkg",
    ]
    return command + list(args)


def run_apt_get(root: os.PathLike, *args: str) -> float:
    """Run apt-get on ``root``; returns its wall time in seconds; AptGetError if it fails."""
    command = apt_get_command(root, *args)
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    started = time.perf_counter()
    result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=environment, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        tail = result.stdout.decode(errors="replace").strip().splitlines()[-5:]
        raise AptGetError(f"{' '.join(command)} exited {result.returncode}: {' | '.join(tail)}")
    return elapsed
