"""``./localjobs up``: the local AWS IoT Jobs service for a user, in one command."""

from __future__ import annotations

import argparse
import configparser
import json
import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import List, Optional, Sequence

from local_jobs.apt_repo import AptRepoError, DemoApt, demo_setup
from local_jobs.broker import BrokerError, port_is_free
from local_jobs.certificates import CertificateError
from local_jobs.demo import configure_thing
from local_jobs.stack import REPO_ROOT, LocalStack, StackError, edit_settings

log = logging.getLogger(__name__)

DEFAULT_DIR = REPO_ROOT / ".local" / "localjobs"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localjobs",
        description="A local stand-in for AWS IoT Jobs: the device API over MQTT and HTTPS, "
        "the control plane with job templates, and a local S3.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser(
        "up",
        help="start broker, Jobs service and control plane until Ctrl-C",
        description="Start mosquitto (mutual TLS), the Jobs service and its control plane on "
        "free loopback ports; make certificates and per-thing settings on first use.",
    )
    up.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"state folder ({DEFAULT_DIR})")
    up.add_argument(
        "--thing", action="append", default=[], metavar="NAME", help="a thing (repeatable)"
    )
    up.add_argument(
        "--minute-seconds",
        type=float,
        default=60.0,
        help="real seconds in one service minute, for step/in-progress timeouts (60)",
    )
    up.add_argument(
        "--host-apt",
        action="store_true",
        help="let the things' agents install into this machine's real apt (as root, with "
        "[apt] allowed_packages set by you) instead of the throwaway apt root under DIR/apt.d",
    )
    up.add_argument("--log-level", default="INFO")
    return parser


def _previous_ports(endpoints_path: Path):
    """Ports of the last run in this folder, when still free, so agent settings stay valid."""
    try:
        previous = json.loads(endpoints_path.read_text())
        ports = [
            int(previous["mqtt_port"]),
            int(previous["control_url"].rsplit(":", 1)[1]),
            int(previous.get("jobs_data_url", ":0").rsplit(":", 1)[1]),
            int(previous.get("s3_url", ":0").rsplit(":", 1)[1]),
        ]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None, None, None, None
    return tuple(port if port and port_is_free(port) else None for port in ports)


AWS_ENVIRONMENT = (
    "export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1"
)
AWS_CLI = REPO_ROOT / ".venv" / "bin" / "aws"
EXAMPLE_DOCUMENT = {"jobType": "APT_UPDATE", "aptPackageName": "cowsay"}


def free_job_id(stack: LocalStack, prefix: str = "hello") -> str:
    """The first of ``hello-1``, ``hello-2``... that names no job yet, so the example runs."""
    iot = stack.iot_client()
    number = 1
    while True:
        job_id = f"{prefix}-{number}"
        try:
            iot.describe_job(jobId=job_id)
        except iot.exceptions.ResourceNotFoundException:
            return job_id
        number += 1


def example_commands(stack: LocalStack, thing_name: str, job_id: str) -> List[str]:
    """Shell lines that queue an APT_UPDATE job, run the thing's agent and show the outcome."""
    aws = shlex.quote(str(AWS_CLI))
    url = stack.control_url
    creds = stack.thing(thing_name)
    return [
        AWS_ENVIRONMENT,
        f"{aws} iot create-job --endpoint-url {url} --job-id {job_id}"
        f" --targets {creds.arn} --document {shlex.quote(json.dumps(EXAMPLE_DOCUMENT))}",
        f"{shlex.quote(str(REPO_ROOT / 'start.sh'))} --config"
        f" {shlex.quote(str(creds.settings_path))}",
        f"{aws} iot describe-job-execution --endpoint-url {url} --job-id {job_id}"
        f" --thing-name {thing_name}",
    ]


def example_command(stack: LocalStack, thing_name: str) -> str:
    """An AWS CLI line that queues a job on ``thing_name`` through the local control plane."""
    return example_commands(stack, thing_name, "hello-1")[1]


def set_host_apt(settings_path: Path) -> None:
    """Let the thing's agent use this machine's apt: no ``[apt] root_dir``; keep the rest."""

    def change(parser: configparser.ConfigParser) -> None:
        if not parser.has_section("apt"):
            parser.add_section("apt")
        parser.remove_option("apt", "root_dir")
        if not parser.has_option("apt", "allowed_packages"):
            parser.set("apt", "allowed_packages", "")

    edit_settings(
        settings_path, change, "Written by ./localjobs up --host-apt: apt works on this machine."
    )


def prepare_apt(stack: LocalStack, host_apt: bool) -> Optional[DemoApt]:
    """Point every thing's ``[apt]`` at the example root (made or reused), or at the host."""
    if host_apt:
        for name in stack.things:
            set_host_apt(stack.thing(name).settings_path)
        return None
    apt = demo_setup(stack.directory / "apt.d", keep_root=True)
    for name in stack.things:
        configure_thing(stack.thing(name).settings_path, apt.root, apt.allowed_packages)
    return apt


def prepare_downloads(stack: LocalStack) -> None:
    """Let Download-File jobs write to ``DIR/<thing>/downloads`` and trust the local S3."""
    for name in stack.things:
        path = stack.thing(name).settings_path

        def change(parser: configparser.ConfigParser, folder: Path = path.parent) -> None:
            if not parser.has_section("download"):
                parser.add_section("download")
            if not parser.get("download", "directory", fallback=""):
                parser.set("download", "directory", str(folder / "downloads"))
            parser.set("download", "ca_file", str(stack.ca_path))

        edit_settings(path, change, "Written by ./localjobs up for the local AWS IoT Jobs service.")


def s3_commands(stack: LocalStack, thing_name: str) -> List[str]:
    """Shell lines that put a job document into the local S3 and make a job from it."""
    aws = shlex.quote(str(AWS_CLI))
    where = f"--endpoint-url {stack.s3_url} --ca-bundle {shlex.quote(str(stack.ca_path))}"
    document = shlex.quote(json.dumps(EXAMPLE_DOCUMENT))
    return [
        f"echo {document} > job.json",
        f"{aws} s3 mb s3://jobs {where}",
        f"{aws} s3 cp job.json s3://jobs/job.json {where}",
        f"{aws} iot create-job --endpoint-url {stack.control_url} --job-id from-s3-1"
        f" --targets {stack.thing(thing_name).arn} --document-source s3://jobs/job.json",
    ]


def _apt_lines(apt: Optional[DemoApt]) -> List[str]:
    if apt is None:
        return [
            "apt: --host-apt: the agents install into THIS machine's packages. Run them as root",
            "  and list what jobs may install in [apt] allowed_packages of each settings file",
            "  (empty: every package job is REJECTED NOT_ALLOWED).",
        ]
    return [
        f"apt: the agents install into a throwaway apt root, {apt.root}, whose repository",
        f"  holds {', '.join(apt.allowed_packages)}; this machine's packages are never touched.",
        "  To use this machine's real apt instead, run ./localjobs up --host-apt (then run",
        "  the agent as root and list the packages jobs may install in [apt] allowed_packages).",
    ]


def up(args: argparse.Namespace) -> int:
    directory = args.dir.resolve()
    things = args.thing or ["thing-1"]
    endpoints_path = directory / "endpoints.json"
    mqtt_port, control_port, jobs_data_port, s3_port = _previous_ports(endpoints_path)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stack: Optional[LocalStack] = None
    try:
        stack = LocalStack(
            directory,
            things=things,
            minute_seconds=args.minute_seconds,
            mqtt_port=mqtt_port,
            control_port=control_port,
            jobs_data_port=jobs_data_port,
            s3=True,
            s3_port=s3_port,
            log_level=args.log_level,
        )
        stack.start()
        apt = prepare_apt(stack, args.host_apt)
        prepare_downloads(stack)
        job_id = free_job_id(stack)
    except (CertificateError, BrokerError, StackError, AptRepoError, OSError) as error:
        print(f"localjobs: {error}", file=sys.stderr)
        if stack is not None:
            stack.stop()
        return 1
    commands = example_commands(stack, things[0], job_id)
    try:
        tmp = endpoints_path.with_name("endpoints.json.tmp")
        tmp.write_text(json.dumps(stack.endpoints(), indent=2) + "\n")
        os.replace(tmp, endpoints_path)
        lines = [
            "Local AWS IoT Jobs service is up.",
            f"  MQTT endpoint:  localhost:{stack.mqtt_port} (mutual TLS, CA {stack.ca_path})",
            f"  control plane:  {stack.control_url}",
            f"  HTTPS device API (iot-jobs-data): {stack.jobs_data_url} (the thing's certificate)",
            f"  endpoints:      {endpoints_path}",
        ]
        for name in stack.things:
            lines.append(f"  thing {name}: settings {stack.thing(name).settings_path}")
        lines += [
            f"  service log:    {stack.service_log}",
            "",
            *_apt_lines(apt),
            "",
            f"Queue a job and run the agent of {things[0]} (any AWS credentials are accepted):",
            *("  " + line for line in commands[:3]),
            "  (the agent runs the job, then waits for more; Ctrl-C stops it)",
            "See the outcome (from another terminal, after the same export):",
            "  " + commands[3],
            "",
            f"Local S3 ({stack.s3_url}; objects live until ./localjobs up stops): a job from a "
            "document in S3",
            *("  " + line for line in s3_commands(stack, things[0])),
            "  (${aws:iot:s3-presigned-url:https://s3.amazonaws.com/BUCKET/KEY} in a document"
            " becomes a fresh presigned URL of the local S3 each time a device gets it)",
            "",
            "Ctrl-C stops everything.",
        ]
        print("\n".join(lines), flush=True)
        while not stop.wait(0.5):
            if not stack.broker_running:
                log.error("mosquitto stopped; restarting it")
                stack.start_broker()
            if not stack.service_running:
                log.error("the Jobs service stopped; restarting it (see %s)", stack.service_log)
                stack.start_service()
    finally:
        print("localjobs: stopping", flush=True)
        stack.stop()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if args.command == "up":
        return up(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
