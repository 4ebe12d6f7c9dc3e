"""``./start.sh --local [--demo]``: the real agent against the local Jobs service, no AWS account.

Starts the local stack (certificates, mosquitto, the Jobs service and its control plane) for
one demo thing under ``--dir``, builds a small apt repository and a throwaway apt root
(``local_jobs/apt_repo.py``), points the thing's ``[apt]`` settings at that root, and runs
``jobs_agent.py`` in a child process. Without ``--demo`` it prints how to create jobs with the
AWS CLI or boto3 and runs until Ctrl-C. With ``--demo`` it creates one APT_UPDATE job, prints
the execution's status transitions and final statusDetails, and exits 0 when it SUCCEEDED,
1 when it ended otherwise or not in time, 2 when the demo could not be set up.

The ports of a run are kept in ``DIR/demo/ports.json`` and used again while they are free (as
``./localjobs up`` does), so commands pasted from one run still work in the next.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

from local_jobs.agent_process import AgentProcess, jobs_agent_command
from local_jobs.apt_repo import AptRepoError, AptRoot, DemoApt, demo_setup
from local_jobs.broker import BrokerError, port_is_free
from local_jobs.certificates import CertificateError
from local_jobs.processes import child_preexec
from local_jobs.stack import REPO_ROOT, LocalStack, StackError, edit_settings

DEMO_THING = "demo-thing"
TERMINAL_STATUSES = frozenset(
    ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "REMOVED")
)
AGENT_STOP_SECONDS = 30.0
POLL_SECONDS = 0.1


class DemoError(Exception):
    """The demo could not be set up (stack, apt root or agent did not start)."""


class NotifyListener:
    """A ``NOTIFY_SOCKET`` for the agent: the demo learns when it is connected (READY=1).

    The socket lives in a short temporary folder (socket paths are limited to 107 bytes).
    """

    def __init__(self) -> None:
        self._folder = tempfile.mkdtemp(prefix="iot-demo-")
        self.path = os.path.join(self._folder, "notify.sock")
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self.path)
        self._socket.settimeout(0.5)
        self.ready = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="demo-notify", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._socket.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if "READY=1" in data.decode(errors="replace").splitlines():
                self.ready.set()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self._socket.close()
        try:
            os.unlink(self.path)
            os.rmdir(self._folder)
        except OSError:
            pass


def start_agent(settings_path: Path, notify_path: str, log_file: Optional[Path]) -> AgentProcess:
    """``jobs_agent.py`` for the demo thing, in its own session so Ctrl-C reaches only us;
    it tells ``notify_path`` when it is connected (READY=1)."""
    script = REPO_ROOT / "jobs_agent.py"
    if not script.is_file():
        raise DemoError(f"the agent {script} is not there")
    return AgentProcess(
        jobs_agent_command(settings_path, script),
        log_file,
        env={"NOTIFY_SOCKET": notify_path},
        new_session=True,
        preexec_fn=child_preexec,
        stop_timeout=AGENT_STOP_SECONDS,
    ).start()


def configure_thing(settings_path: Path, apt_root: Path, allowed: Sequence[str]) -> None:
    """Point the thing's settings at the throwaway apt root; keep everything else."""

    def change(parser: configparser.ConfigParser) -> None:
        if not parser.has_section("apt"):
            parser.add_section("apt")
        parser.set("apt", "root_dir", str(apt_root))
        parser.set("apt", "allowed_packages", ", ".join(allowed))

    edit_settings(
        settings_path, change, "Written by local_jobs.stack and local_jobs.demo for the local demo."
    )


class ExecutionWatcher:
    """Prints each new (status, statusDetails) of one job execution, timed from its creation."""

    def __init__(self, describe: Callable[[], Dict], print_line: Callable[[str], None]) -> None:
        self._describe = describe
        self._print = print_line
        self._created = time.monotonic()
        self._last: Optional[tuple] = None

    def poll(self) -> Dict:
        """Describe the execution once; print it when it changed; return it."""
        execution = self._describe()
        details = (execution.get("statusDetails") or {}).get("detailsMap") or {}
        seen = (execution.get("status"), json.dumps(details, sort_keys=True))
        if seen != self._last:
            # A final status's details are printed in full afterwards.
            text = seen[1] if details and seen[0] not in TERMINAL_STATUSES else ""
            elapsed = time.monotonic() - self._created
            self._print(f"  {elapsed:7.2f}s  {seen[0]:<12} {text}".rstrip())
            self._last = seen
        return execution

    def wait_terminal(self, deadline: float, keep_going: Callable[[], bool]) -> Optional[Dict]:
        """Poll until the execution ends; return it, or None when ``deadline`` (monotonic)
        passes or ``keep_going()`` turns false first."""
        while True:
            execution = self.poll()
            if execution.get("status") in TERMINAL_STATUSES:
                return execution
            if time.monotonic() >= deadline or not keep_going():
                return None
            time.sleep(POLL_SECONDS)


def _instructions(stack: LocalStack, thing: str, example: Dict) -> str:
    arn = stack.thing(thing).arn
    document = json.dumps(example)
    return f"""
The local AWS IoT Jobs service and the agent are running (all state in {stack.directory}).
  MQTT broker     localhost:{stack.mqtt_port} (mutual TLS, CA {stack.ca_path})
  control plane   {stack.control_url} (AWS IoT's jobs API)
  thing           {thing} ({arn})
  agent settings  {stack.thing(thing).settings_path}

Create a job from another terminal with the AWS CLI (any credentials are accepted):
  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1
  .venv/bin/aws iot create-job --endpoint-url {stack.control_url} \\
      --job-id my-job-1 --targets {arn} \\
      --document '{document}'
  .venv/bin/aws iot describe-job-execution --endpoint-url {stack.control_url} \\
      --job-id my-job-1 --thing-name {thing}
  (or --document file://examples/apt-update-single.json, and the other examples/)

or with boto3 (.venv/bin/python):
  import boto3, json
  iot = boto3.client("iot", endpoint_url="{stack.control_url}", region_name="us-east-1",
                     aws_access_key_id="local", aws_secret_access_key="local")
  iot.create_job(jobId="my-job-2", targets=["{arn}"], document=json.dumps({example!r}))
  iot.describe_job_execution(jobId="my-job-2", thingName="{thing}")["execution"]["status"]

Ctrl-C stops the agent and the local service.
"""


PORTS_FILE = "ports.json"


def previous_ports(path: Path) -> Dict[str, Optional[int]]:
    """The MQTT and control-plane ports a previous run saved in ``path``, each only while it is
    still free (None: pick a new one)."""
    try:
        saved = json.loads(path.read_text())
        ports = {name: int(saved[name]) for name in ("mqtt_port", "control_port")}
    except (OSError, ValueError, KeyError, TypeError):
        return {"mqtt_port": None, "control_port": None}
    return {
        name: port if 0 < port < 65536 and port_is_free(port) else None
        for name, port in ports.items()
    }


def save_ports(stack: LocalStack, path: Path) -> None:
    """Remember the ports of this run for the next (written whole, then renamed)."""
    tmp = path.with_name(PORTS_FILE + ".tmp")
    tmp.write_text(json.dumps({"mqtt_port": stack.mqtt_port, "control_port": stack.control_port}))
    os.replace(tmp, path)


def _print(text: str) -> None:
    print(text, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="start.sh --local",
        description="Run the agent against a local Jobs service and a throwaway apt root.",
    )
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / ".local", help="state folder")
    parser.add_argument(
        "--demo", action="store_true", help="run one APT_UPDATE job end to end, then exit"
    )
    parser.add_argument("--thing", default=DEMO_THING, help=f"thing name ({DEMO_THING})")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds the demo job may take (120)"
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    base = args.dir.resolve() / "demo"
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ports_path = base / PORTS_FILE
    stack = LocalStack(base / "stack", things=[args.thing], **previous_ports(ports_path))
    notify = NotifyListener()
    agent: Optional[AgentProcess] = None
    try:
        _print(f"Starting the local Jobs service and broker in {stack.directory} ...")
        stack.start()
        save_ports(stack, ports_path)
        _print("Building the demo apt repository and a throwaway apt root ...")
        apt = demo_setup(base / "apt")
        settings_path = stack.thing(args.thing).settings_path
        configure_thing(settings_path, apt.root, apt.allowed_packages)
        watcher = _create_demo_job(stack, args.thing, apt.example_document) if args.demo else None
        log_file = base / "agent.log" if args.demo else None
        agent = start_agent(settings_path, notify.path, log_file)
        where = f", log {log_file}" if log_file else ""
        _print(f"Agent started (pid {agent.pid}){where}")
        if watcher is not None:
            return _finish_demo(args, apt, agent, watcher, stop)
        _print(_instructions(stack, args.thing, apt.example_document))
        announced = False
        while not stop.wait(0.5):
            if notify.ready.is_set() and not announced:
                _print("Agent connected and subscribed (READY=1); waiting for jobs.")
                announced = True
            if not agent.running():
                _print(f"The agent exited with status {agent.returncode}.")
                return agent.returncode or 1
        return 0
    except (DemoError, StackError, BrokerError, CertificateError, AptRepoError, OSError) as error:
        _print(f"start.sh --local: {error}")
        return 2
    finally:
        if agent is not None:
            status = agent.stop()
            _print(f"Agent stopped (exit status {status}).")
        stack.stop()
        notify.close()
        _print("Local Jobs service stopped.")


def _create_demo_job(stack: LocalStack, thing: str, document: Dict) -> ExecutionWatcher:
    """Queue the demo job before the agent runs, so QUEUED is seen, as for an offline device."""
    iot = stack.iot_client()
    job_id = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    iot.create_job(jobId=job_id, targets=[stack.thing(thing).arn], document=json.dumps(document))
    _print(f"Created job {job_id} for {thing} (its agent not started yet): {json.dumps(document)}")
    _print("Status transitions (seconds since the job was created):")
    watcher = ExecutionWatcher(
        lambda: iot.describe_job_execution(jobId=job_id, thingName=thing)["execution"], _print
    )
    watcher.poll()
    return watcher


def _finish_demo(
    args: argparse.Namespace,
    apt: DemoApt,
    agent: AgentProcess,
    watcher: ExecutionWatcher,
    stop: threading.Event,
) -> int:
    """Watch the demo job to its end; print the outcome; 0 when it SUCCEEDED."""
    execution = watcher.wait_terminal(
        time.monotonic() + args.timeout, lambda: not stop.is_set() and agent.running()
    )
    if execution is None:
        if not agent.running():
            why = f"the agent exited with status {agent.returncode}"
        elif stop.is_set():
            why = "interrupted"
        else:
            why = f"the job did not finish within {args.timeout:g}s"
        _print(f"Demo FAILED: {why}. Last lines of {agent.log_file}:\n{agent.log_tail()}")
        return 1
    details = (execution.get("statusDetails") or {}).get("detailsMap") or {}
    _print("Final statusDetails:")
    _print(json.dumps(details, indent=2, sort_keys=True))
    status = execution["status"]
    if status != "SUCCEEDED":
        _print(f"Demo FAILED: the job ended {status}. Agent log: {agent.log_file}")
        return 1
    root = AptRoot(apt.root)
    installed = ", ".join(
        f"{name} {root.installed_version(name)}"
        for name in apt.allowed_packages
        if root.installed_version(name)
    )
    _print(f"Demo SUCCEEDED: dpkg in the demo root {apt.root} now has: {installed or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
