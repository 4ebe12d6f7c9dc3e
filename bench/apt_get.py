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
import tempfile
import time
from pathlib import Path
from typing import List, Tuple


class AptGetError(RuntimeError):
    """apt-get exited non-zero; the message holds the command's last output lines."""


def apt_get_command(root: os.PathLike, *args: str, tool: str = "apt-get") -> List[str]:
    """``apt-get`` (or another apt ``tool``) arguments operating on ``root``, not the host."""
    root = Path(root).resolve()
    configs: List[Path] = []
    if (root / "etc/apt/apt.conf").is_file():
        configs.append(root / "etc/apt/apt.conf")
    parts = root / "etc/apt/apt.conf.d"
    if parts.is_dir():
        configs.extend(sorted(path for path in parts.iterdir() if path.is_file()))
    command = [tool, "-q"]
    for config in configs:
        command += ["-c", str(config)]
    command += [
        "-o", f"Dir={root}",
        "-o", f"Dir::State::status={root}/var/lib/dpkg/status",
        "-o", f"Dir::Bin::dpkg={root}/usr/bin/dpkg",
    ]
    return command + list(args)


def run_apt_get_measured(root: os.PathLike, *args: str, tool: str = "apt-get"
                         ) -> Tuple[float, float]:
    """Run ``tool`` on ``root``: (wall seconds, peak RSS MiB from wait4's ru_maxrss).

    ru_maxrss is the same figure ``/usr/bin/time -v`` prints. AptGetError if it fails.
    """
    command = apt_get_command(root, *args, tool=tool)
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with tempfile.TemporaryFile() as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=subprocess.STDOUT, env=environment)
        _pid, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            output.seek(0)
            tail = output.read().decode(errors="replace").strip().splitlines()[-5:]
            raise AptGetError(
                f"{' '.join(command)} exited {process.returncode}: {' | '.join(tail)}")
    return elapsed, usage.ru_maxrss / 1024
