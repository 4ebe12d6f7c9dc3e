"""The local Jobs service as a process: ``python -m local_jobs.server --db ... --mqtt-port ...``.

Wires the state machine (``service.py``) to its front ends: the MQTT device API
(``data_plane.py``) and the control plane over HTTP (``control_plane.py``), and runs them
until SIGTERM or SIGINT. ``stack.py`` starts it; nothing imports it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Optional, Sequence

from local_jobs import control_plane, jobs_data
from local_jobs.certificates import ensure_certificates
from local_jobs.data_plane import DataPlane
from local_jobs.model import Job
from local_jobs.s3 import DEFAULT_EXPIRES_SECONDS, PRESIGNED_MARK, LocalS3
from local_jobs.service import LocalJobsService
from local_jobs.store import Store
from local_jobs.templates import TemplateStore

log = logging.getLogger(__name__)


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local_jobs.server", description="Run the local AWS IoT Jobs service."
    )
    parser.add_argument("--db", required=True, help="SQLite file of jobs and executions")
    parser.add_argument("--mqtt-host", default="127.0.0.1")
    parser.add_argument("--mqtt-port", type=int, required=True)
    parser.add_argument("--certs", required=True, help="certificate folder")
    parser.add_argument("--documents-dir", help="folder for relative CreateJob documentSource")
    parser.add_argument("--control-host", default="127.0.0.1")
    parser.add_argument("--control-port", type=int, default=0, help="0: no control plane")
    parser.add_argument("--jobs-data-port", type=int, default=0,
                        help="port of the HTTPS device API (iot-jobs-data); 0: none")
    parser.add_argument("--s3-url", help="the local S3 (s3.py) for documentSource and "
                        "presigned-URL placeholders; none: both are refused")
    parser.add_argument("--minute-seconds", type=float, default=60.0)
    parser.add_argument("--requests-per-second", type=float, default=0.0,
                        help="per-thing request limit before RequestThrottled (0: none)")
    parser.add_argument("--ready-file", help="holds the count of successful subscriptions")
    parser.add_argument("--log-file")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the service until SIGTERM or SIGINT: data plane on MQTT, control plane on HTTP."""
    args = _parse_args(argv)
    handler: logging.Handler = (
        logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler()
    )
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    )
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    certs = ensure_certificates(args.certs)
    store = Store(args.db)
    templates = TemplateStore(args.db)
    s3 = LocalS3(args.s3_url, certs.ca.certificate) if args.s3_url else None
    service = LocalJobsService(
        store,
        minute_seconds=args.minute_seconds,
        things=certs.thing_names,
        device_document=_presigner(s3, templates) if s3 else None,
    )
    subscriptions = [0]

    def on_subscribed() -> None:
        subscriptions[0] += 1
        if args.ready_file:
            tmp = Path(args.ready_file + ".tmp")
            tmp.write_text(f"{subscriptions[0]}\n")
            os.replace(tmp, args.ready_file)

    plane = DataPlane(
        service,
        host=args.mqtt_host,
        port=args.mqtt_port,
        ca=certs.ca.certificate,
        certificate=certs.service.certificate,
        private_key=certs.service.private_key,
        requests_per_second=args.requests_per_second or None,
        on_subscribed=on_subscribed,
    )
    control = None
    jobs_data_server = None
    try:
        if args.control_port:
            control = control_plane.serve(
                service,
                args.control_host,
                args.control_port,
                documents_dir=args.documents_dir or None,
                templates=templates,
                s3=s3,
            )
        if args.jobs_data_port:
            jobs_data_server = jobs_data.serve(
                service,
                args.control_host,
                args.jobs_data_port,
                ca=certs.ca.certificate,
                certificate=certs.server.certificate,
                private_key=certs.server.private_key,
            )
            # DescribeEndpoint (fleet_api.py): the MQTT endpoint with its local port.
            mqtt_endpoint = f"localhost:{args.mqtt_port}"
            control.device_endpoints = {"iot:Data-ATS": mqtt_endpoint, "iot:Data": mqtt_endpoint}
        plane.start()
        log.info(
            "local Jobs service running: MQTT %s:%s, control plane %s",
            args.mqtt_host,
            args.mqtt_port,
            f"http://{args.control_host}:{args.control_port}" if control else "off",
        )
        while not stop.wait(0.1):
            pass
        log.info("stopping")
    finally:
        if control is not None:
            control.shutdown()
        if jobs_data_server is not None:
            jobs_data_server.shutdown()
        plane.stop()
        service.close()
        templates.close()
        store.close()
    return 0


def _presigner(s3: LocalS3, templates: TemplateStore) -> Callable[[Job], str]:
    """The document a device is handed: presigned-URL placeholders filled in afresh, for the
    job's presignedUrlConfig.expiresInSec (an hour by default)."""

    def document(job: Job) -> str:
        if PRESIGNED_MARK not in job.document:
            return job.document
        config = templates.job_extras(job.job_id).get("presignedUrlConfig") or {}
        return s3.presign(job.document, config.get("expiresInSec", DEFAULT_EXPIRES_SECONDS))

    return document


if __name__ == "__main__":
    sys.exit(main())
