"""A Debian guest booted with systemd as PID 1 under systemd-nspawn, for the system tier.

The guest shares the host's network namespace (no ``--private-network``), so the agent inside
reaches the local Jobs service on the host's loopback. Flags, as found in
../shared/system-test-notes.md: ``--register=no --keep-unit`` (no machined or systemd on the
host), ``--console=read-only`` (a passive console blocks PID 1 once its buffer fills), and a
boot loop that boots again when the guest reboots (nspawn exits with status 133).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
ROOT_BUILDER = REPO / "scripts" / "debian-root.sh"
REBOOT_EXIT_STATUS = 133
GUEST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# What every guest root holds besides minbase: systemd as init, the agent's Debian
# dependencies (so the package installs from the local repository alone), tools the tests use.
ROOT_PACKAGES = (
    "systemd,systemd-sysv,dbus,python3,python3-apt,python3-systemd,python3-cryptography,"
    "python3-dbus,ca-certificates,procps,iproute2,udev"
)


class GuestError(RuntimeError):
    """The guest did not boot, or a command in it failed."""


def system_tier_unavailable() -> Optional[str]:
    """Why the system tier cannot run here (a plain sentence), or None when it can."""
    if os.geteuid() != 0:
        return "needs root with CAP_SYS_ADMIN to boot guests with systemd-nspawn"
    status = Path("/proc/self/status").read_text()
    caps = next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff"))
    effective = int(caps, 16)
    if not effective & (1 << 21):
        return "needs CAP_SYS_ADMIN (a privileged container or a VM) for systemd-nspawn"
    if shutil.which("systemd-nspawn") is None:
        return "systemd-nspawn is missing: apt-get install systemd-container"
    if shutil.which("nsenter") is None:
        return "nsenter is missing (util-linux)"
    return None


def make_root(release: str, destination: Path, hostname: str) -> Path:
    """A fresh root of ``release`` in ``destination`` (scripts/debian-root.sh, cached)."""
    result = subprocess.run(
        [str(ROOT_BUILDER), "--include", ROOT_PACKAGES, "--hostname", hostname, release,
         str(destination)],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if result.returncode != 0:
        raise GuestError(f"debian-root.sh {release} failed:\n{result.stderr[-3000:]}")
    return destination


class Guest:
    """A booted guest in ``root``; ``run()`` executes commands inside it."""

    def __init__(self, root: Path, console_log: Path, machine: str) -> None:
        self.root = Path(root)
        self.console_log = Path(console_log)
        self.machine = machine
        self.boots = 0
        self.exit_status: Optional[int] = None
        self._process: Optional[subprocess.Popen] = None
        self._stopping = False
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    # lifecycle

    def boot(self, timeout: float = 120.0) -> Guest:
        """Boot the guest and wait until systemd says the system is running."""
        self._thread = threading.Thread(target=self._boot_loop, name=f"guest-{self.machine}",
                                        daemon=True)
        self._thread.start()
        self.wait_booted(0, timeout)
        return self

    def _boot_loop(self) -> None:
        command = [
            "systemd-nspawn", "-q", "-D", str(self.root), "-b", f"--machine={self.machine}",
            "--register=no", "--keep-unit", "--console=read-only",
        ]
        while True:
            with self._lock:
                if self._stopping:
                    return
                with open(self.console_log, "ab") as out:
                    self._process = subprocess.Popen(
                        command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
                    )
                self.boots += 1
            status = self._process.wait()
            if status != REBOOT_EXIT_STATUS:
                self.exit_status = status
                return

    def wait_booted(self, after_boots: int, timeout: float = 120.0) -> None:
        """Wait for boot number ``after_boots + 1`` (or later) to reach running/degraded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exit_status is not None:
                raise GuestError(f"the guest exited with status {self.exit_status}; "
                                 f"console: {self.console_tail()}")
            if self.boots > after_boots and self.pid1() is not None:
                state = self.run("systemctl", "is-system-running", "--wait", check=False,
                                 timeout=max(1.0, deadline - time.monotonic()))
                if state.stdout.strip() in ("running", "degraded"):
                    return
            time.sleep(0.2)
        raise GuestError(f"the guest did not boot in {timeout} s; console: {self.console_tail()}")

    def shutdown(self, timeout: float = 120.0) -> None:
        """Power the guest off (killing nspawn if it does not go), and wait for the loop."""
        with self._lock:
            self._stopping = True
        if self.pid1() is not None:
            self.run("systemctl", "poweroff", "--no-block", check=False, timeout=30)
        process = self._process
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)
        if self._thread is not None:
            self._thread.join(30)

    # inside the guest

    def pid1(self) -> Optional[int]:
        """The guest's PID 1 (systemd) as the host sees it, or None between boots."""
        process = self._process
        if process is None or process.poll() is not None:
            return None
        try:
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        except OSError:
            return None
        for child in children:
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    return int(child)
            except OSError:
                continue
        return None

    def run(self, *argv: str, check: bool = True, timeout: float = 120.0,
            input: Optional[str] = None) -> subprocess.CompletedProcess:
        """Run ``argv`` in the guest (all its namespaces but the network, shared with the host)."""
        pid = self.pid1()
        if pid is None:
            raise GuestError(f"the guest is not running (for {' '.join(argv)})")
        command: List[str] = [
            "nsenter", "-t", str(pid), "-m", "-u", "-i", "-p", "-C", "--",
            "env", "-i", f"PATH={GUEST_PATH}", "HOME=/root", "LANG=C.UTF-8",
            "DEBIAN_FRONTEND=noninteractive", *argv,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                input=input, check=False)
        if check and result.returncode != 0:
            raise GuestError(f"{' '.join(argv)} exited {result.returncode}:\n"
                             f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        return result

    def path(self, guest_path: str) -> Path:
        """The host path of ``guest_path`` in the guest's root."""
        return self.root / guest_path.lstrip("/")

    def write(self, guest_path: str, text: str, mode: int = 0o644) -> None:
        target = self.path(guest_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def unit(self, unit: str, *properties: str) -> dict:
        """``systemctl show -p ...`` of ``unit`` as a dict."""
        args: List[str] = []
        for name in properties:
            args += ["-p", name]
        shown = self.run("systemctl", "show", unit, *args).stdout
        return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)

    def journal(self, unit: str = "iot-jobs-agent.service", lines: int = 80) -> str:
        return self.run("journalctl", "-b", "--no-pager", "-n", str(lines), "-u", unit,
                        check=False).stdout

    def dpkg_status(self, package: str) -> str:
        """dpkg's ``${Status}`` of ``package`` ("install ok installed"), "" when unknown."""
        return self.run("dpkg-query", "-W", "-f=${Status} ${Version}", package,
                        check=False).stdout.strip()

    def console_tail(self, size: int = 2000) -> str:
        try:
            return self.console_log.read_text(errors="replace")[-size:]
        except OSError:
            return ""


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``predicate`` until it returns something true; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def apt_sources(repo_guest_path: str) -> str:
    """sources.list with only the local repository (no network for apt in the guest)."""
    return f"deb [trusted=yes] file:{repo_guest_path} ./\n"


def index_repository(folder: Path) -> None:
    """(Re)write the flat repository's Packages index over every .deb in ``folder``."""
    index = subprocess.run(
        ["dpkg-scanpackages", "-m", ".", "/dev/null"], cwd=folder, capture_output=True,
        text=True, timeout=120, check=True,
    ).stdout
    (folder / "Packages").write_text(index)


def copy_debs(debs: Sequence[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        shutil.copy2(deb, folder / deb.name)
