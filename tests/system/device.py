"""A guest set up as a device: the agent's package from a local apt repository, settings
pointing at the local Jobs service on the host, jobs created and read through its control plane.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Sequence

from guest import Guest, apt_sources, copy_debs, index_repository, wait_until

from local_jobs.apt_repo import Package, build_deb
from local_jobs.stack import LocalStack

REPO = Path(__file__).resolve().parents[2]
BUILD_DEB = REPO / "packaging" / "build-deb.sh"
THING = "dev-1"
UNIT = "iot-jobs-agent.service"
REPO_IN_GUEST = "/srv/systest-repo"
SETTINGS = "/etc/iot-jobs-agent/settings.conf"
TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "REMOVED")
# The grace a stopping agent gives a running job; short, so that a job that outlives it is
# quick to make (a postinst of POSTINST_SECONDS).
SHUTDOWN_GRACE_SECONDS = 5
POSTINST_SECONDS = 12
ALLOWED = ("rs-hello", "rs-stop", "rs-restart", "rs-restarter", "rs-kill", "rs-reboot",
           "iot-jobs-agent")


def build_agent_deb(version: str, out: Path) -> Path:
    """packaging/build-deb.sh --version VERSION --out OUT; the .deb's path."""
    result = subprocess.run(
        [str(BUILD_DEB), "--version", version, "--out", str(out), "--no-lintian"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"build-deb.sh --version {version} failed:\n{result.stderr[-3000:]}")
    return out / f"iot-jobs-agent_{version}_all.deb"


def slow_package(name: str) -> Package:
    """A package whose postinst marks its start in /run, then runs for POSTINST_SECONDS."""
    return Package(name, "1.0", scripts={"postinst": (
        f'if [ "$1" = configure ]; then touch /run/systest-{name}-started; '
        f"sleep {POSTINST_SECONDS}; fi\n"
    )})


def restarter_package() -> Package:
    """A postinst that restarts the agent as dh_installsystemd's scripts do: blocking."""
    return Package("rs-restarter", "1.0", scripts={"postinst": (
        'if [ "$1" = configure ]; then touch /run/systest-rs-restarter-started; '
        f"systemctl try-restart {UNIT}; fi\n"
    )})


def scenario_packages() -> Sequence[Package]:
    return (
        Package("rs-hello", "1.0"),
        Package("rs-hello", "2.0"),
        slow_package("rs-stop"),
        slow_package("rs-restart"),
        slow_package("rs-kill"),
        slow_package("rs-reboot"),
        restarter_package(),
    )


class Device:
    """The guest as a device of ``stack``'s thing dev-1."""

    def __init__(self, guest: Guest, stack: LocalStack) -> None:
        self.guest = guest
        self.stack = stack
        self.repo = guest.path(REPO_IN_GUEST)
        self.jobs: list = []

    # set-up

    def publish(self, debs: Iterable[Path] = (), packages: Iterable[Package] = ()) -> None:
        """Put .debs and test packages into the guest's local repository; apt-get update."""
        copy_debs(list(debs), self.repo)
        for package in packages:
            build_deb(package, self.repo)
        index_repository(self.repo)
        self.guest.write("/etc/apt/sources.list", apt_sources(REPO_IN_GUEST))
        for extra in self.guest.path("/etc/apt/sources.list.d").glob("*"):
            extra.unlink()
        self.guest.run("apt-get", "update", "-q")

    def apt_install(self, *names: str) -> None:
        self.guest.run("apt-get", "install", "-y", "-q", *names, timeout=300)

    def write_settings(self, **agent: Any) -> None:
        """Certificates into /etc/iot-jobs-agent/certs and settings.conf naming them relatively."""
        creds = self.stack.thing(THING)
        certs = "/etc/iot-jobs-agent/certs"
        for source, name in ((self.stack.ca_path, "ca.crt"), (creds.certificate, "device.crt"),
                             (creds.private_key, "device.key")):
            self.guest.write(f"{certs}/{name}", Path(source).read_text(), 0o600)
        agent_lines = "".join(f"{key} = {value}\n" for key, value in agent.items())
        self.guest.write(SETTINGS, (
            "[connection]\n"
            "endpoint = localhost\n"
            f"port = {self.stack.mqtt_port}\n"
            f"thing_name = {THING}\n"
            "root_ca = certs/ca.crt\n"
            "certificate = certs/device.crt\n"
            "private_key = certs/device.key\n"
            "[agent]\n"
            "state_dir = /var/lib/iot-jobs-agent\n"
            f"shutdown_grace_seconds = {SHUTDOWN_GRACE_SECONDS}\n"
            f"{agent_lines}"
            "[apt]\n"
            f"allowed_packages = {', '.join(ALLOWED)}\n"
            "[reboot]\n"
            "enabled = yes\n"
        ), 0o600)

    def drop_in(self, name: str, text: str) -> None:
        """A unit drop-in for the agent (then daemon-reload)."""
        self.guest.write(f"/etc/systemd/system/{UNIT}.d/{name}.conf", "[Service]\n" + text)
        self.guest.run("systemctl", "daemon-reload")

    # the service

    def state(self) -> Dict[str, str]:
        return self.guest.unit(UNIT, "ActiveState", "SubState", "Result", "MainPID", "NRestarts",
                               "StatusText", "WatchdogUSec", "ConditionResult")

    def wait_active(self, timeout: float = 60.0) -> Dict[str, str]:
        def active():
            state = self.state()
            return state if state["ActiveState"] == "active" else None

        try:
            return wait_until(active, timeout, "the agent active (READY=1)")
        except AssertionError:
            raise AssertionError(
                f"agent not active: {self.state()}\n{self.guest.journal()}"
            ) from None

    def agent_version(self) -> str:
        return self.guest.run("iot-jobs-agent", "--version").stdout.split()[-1]

    # jobs

    def create_job(self, job_id: str, document: Dict[str, Any]) -> None:
        self.jobs.append(job_id)
        self.stack.iot_client().create_job(
            jobId=job_id, targets=[self.stack.thing(THING).arn], document=json.dumps(document)
        )

    def execution(self, job_id: str) -> Dict[str, Any]:
        found = self.stack.iot_client().describe_job_execution(jobId=job_id, thingName=THING)
        execution = found["execution"]
        execution["details"] = execution.get("statusDetails", {}).get("detailsMap", {})
        return execution

    def wait_job(self, job_id: str, timeout: float = 120.0,
                 statuses: Sequence[str] = TERMINAL) -> Dict[str, Any]:
        last: Dict[str, Any] = {}

        def done():
            nonlocal last
            last = self.execution(job_id)
            return last if last["status"] in statuses else None

        try:
            return wait_until(done, timeout, f"job {job_id} in {statuses}")
        except AssertionError:
            raise AssertionError(
                f"job {job_id} not in {statuses} after {timeout} s: {last}\n{self.guest.journal()}"
            ) from None

    def wait_postinst_started(self, package: str, timeout: float = 60.0) -> None:
        # /run is the guest's own tmpfs: look from inside.
        marker = f"/run/systest-{package}-started"
        wait_until(lambda: self.guest.run("test", "-e", marker, check=False).returncode == 0,
                   timeout, f"{package}'s postinst to start")

    def apt_job(self, job_id: str, package: str, version: str = "") -> None:
        document: Dict[str, Any] = {"jobType": "APT_UPDATE", "aptPackageName": package}
        if version:
            document["aptPackageVersion"] = version
        self.create_job(job_id, document)

    def main_pid(self) -> int:
        return int(self.state()["MainPID"])

    def wait_restarted(self, old_pid: int, timeout: float = 60.0) -> None:
        def new_main():
            state = self.state()
            pid = int(state["MainPID"])
            return state["ActiveState"] == "active" and pid not in (0, old_pid)

        wait_until(new_main, timeout, "a new agent process, active")

    def ensure_running(self) -> None:
        """Start the agent unless it is active (a failed scenario may leave it stopped)."""
        if self.guest.pid1() is None:
            return
        if self.state()["ActiveState"] not in ("active", "activating", "deactivating"):
            self.guest.run("systemctl", "start", "--no-block", UNIT, check=False)
        self.wait_active(timeout=120)

    def finish_jobs(self, timeout: float = 60.0) -> None:
        """Let this scenario's jobs end; force-cancel those that do not, so that none is left
        queued in front of the next scenario's."""
        client = self.stack.iot_client()
        deadline = time.monotonic() + timeout
        for job_id in self.jobs:
            while self.execution(job_id)["status"] not in TERMINAL:
                if time.monotonic() > deadline:
                    client.cancel_job(jobId=job_id, force=True)
                    break
                time.sleep(0.5)
        self.jobs.clear()
