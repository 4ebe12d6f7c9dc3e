"""``./localjobs up``: the local AWS IoT Jobs service for a user, in one command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Optional, Sequence

from local_jobs.broker import BrokerError, port_is_free
from local_jobs.certificates import CertificateError
from local_jobs.stack import REPO_ROOT, LocalStack, StackError

log = logging.getLogger(__name__)

DEFAULT_DIR = REPO_ROOT / ".local" / "localjobs"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localjobs", description="A local stand-in for AWS IoT Jobs (MQTT + control plane)."
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
    up.add_argument("--log-level", default="INFO")
    return parser


def _previous_ports(endpoints_path: Path):
    """Ports of the last run in this folder, when still free, so agent settings stay valid."""
    try:
        previous = json.loads(endpoints_path.read_text())
        mqtt_port = int(previous["mqtt_port"])
        control_port = int(previous["control_url"].rsplit(":", 1)[1])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None, None
    return (
        mqtt_port if port_is_free(mqtt_port) else None,
        control_port if port_is_free(control_port) else None,
    )


def example_command(stack: LocalStack, thing_name: str) -> str:
    """An AWS CLI line that queues a job on ``thing_name`` through the local control plane."""
    document = json.dumps({"jobType": "APT_UPDATE", "packages": ["cowsay"]})
    return (
        f"aws iot create-job --endpoint-url {stack.control_url} --region us-east-1"
        f" --job-id hello-1 --targets {stack.thing(thing_name).arn} --document '{document}'"
    )


def up(args: argparse.Namespace) -> int:
    directory = args.dir.resolve()
    things = args.thing or ["thing-1"]
    endpoints_path = directory / "endpoints.json"
    mqtt_port, control_port = _previous_ports(endpoints_path)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stack = LocalStack(
            directory,
            things=things,
            minute_seconds=args.minute_seconds,
            mqtt_port=mqtt_port,
            control_port=control_port,
            log_level=args.log_level,
        )
        stack.start()
    except (CertificateError, BrokerError, StackError, OSError) as error:
        print(f"localjobs: {error}", file=sys.stderr)
        return 1
    try:
        tmp = endpoints_path.with_name("endpoints.json.tmp")
        tmp.write_text(json.dumps(stack.endpoints(), indent=2) + "\n")
        os.replace(tmp, endpoints_path)
        lines = [
            "Local AWS IoT Jobs service is up.",
            f"  MQTT endpoint:  localhost:{stack.mqtt_port} (mutual TLS, CA {stack.ca_path})",
            f"  control plane:  {stack.control_url}",
            f"  endpoints:      {endpoints_path}",
        ]
        for name in stack.things:
            lines.append(f"  thing {name}: settings {stack.thing(name).settings_path}")
        lines += [
            f"  service log:    {stack.service_log}",
            "",
            "Queue a job:",
            "  " + example_command(stack, things[0]),
            "  (any AWS credentials are accepted, e.g. AWS_ACCESS_KEY_ID=local"
            " AWS_SECRET_ACCESS_KEY=local)",
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
