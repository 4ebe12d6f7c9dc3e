"""A local S3 for job documents and Download-File jobs: moto's server, over HTTPS on loopback.

Why moto (``moto.server``, pinned in requirements-local.txt): it answers S3's real REST API
(the AWS CLI's ``aws s3 cp``/``mb``, multipart uploads, checksums, presigned URLs) as boto3
and the CLI expect, it is pip-installable next to boto3 with no service or binary to fetch,
and it runs as one more child process like mosquitto. Its objects live in memory: they are
gone when ``./localjobs up`` stops (jobs keep their documents, which CreateJob copied).

- ``S3Server``: the moto process on a loopback port, TLS with the local server certificate.
- ``LocalS3``: what the Jobs service does with it: read a CreateJob ``documentSource`` that
  names an S3 object, and replace ``${aws:iot:s3-presigned-url:URL}`` in a job document with
  a fresh presigned URL each time a device is handed the document (DG:create-manage-jobs).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Optional, Tuple

from local_jobs.model import InvalidRequestError
from local_jobs.processes import child_preexec

log = logging.getLogger(__name__)

PRESIGNED_MARK = "${aws:iot:s3-presigned-url:"
PRESIGNED_PLACEHOLDER = re.compile(r"\$\{aws:iot:s3-presigned-url:([^}]+)\}")
DEFAULT_EXPIRES_SECONDS = 3600
# Virtual-hosted (bucket.s3[.-]region.amazonaws.com/key) and path style (s3[.-]region...
# /bucket/key) S3 object URLs.
_VIRTUAL_HOST = re.compile(r"(?P<bucket>.+)\.s3(?:[.-][a-z0-9-]+)?\.amazonaws\.com")
_PATH_HOST = re.compile(r"s3(?:[.-][a-z0-9-]+)?\.amazonaws\.com")


class S3Error(Exception):
    """The local S3 server did not start or stopped."""


def s3_location(source: str) -> Optional[Tuple[str, str]]:
    """``(bucket, key)`` of an S3 object URL (``s3://B/K``, ``https://B.s3.R.amazonaws.com/K``,
    ``https://s3.R.amazonaws.com/B/K``), or None when ``source`` names no S3 object."""
    parts = urllib.parse.urlsplit(source.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    path = urllib.parse.unquote(parts.path).lstrip("/")
    if scheme == "s3":
        bucket, key = parts.netloc, path
    elif scheme in ("http", "https") and _VIRTUAL_HOST.fullmatch(host):
        bucket, key = _VIRTUAL_HOST.fullmatch(host).group("bucket"), path
    elif scheme in ("http", "https") and _PATH_HOST.fullmatch(host):
        bucket, _, key = path.partition("/")
    else:
        return None
    return (bucket, key) if bucket and key else None


class LocalS3:
    """The Jobs service's S3 client for the local S3 server at ``endpoint_url``."""

    def __init__(self, endpoint_url: str, ca_path: os.PathLike, region: str = "us-east-1"):
        import boto3
        from botocore.config import Config

        self.endpoint_url = endpoint_url
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - dummy credentials of a local service
            verify=str(ca_path),
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 2},
            ),
        )

    def read_document(self, source: str, limit: int) -> str:
        """The text of the S3 object ``source`` names (at most ``limit`` + 1 characters).

        Raises InvalidRequestError naming the source when it is missing or unreadable.
        """
        location = s3_location(source)
        if location is None:
            raise InvalidRequestError(f"documentSource {source!r} names no S3 object")
        bucket, key = location
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self._client.get_object(Bucket=bucket, Key=key)["Body"].read(limit * 4 + 4)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "error")
            raise InvalidRequestError(
                f"documentSource {source!r}: the local S3 ({self.endpoint_url}) answered {code} "
                f"for bucket {bucket!r} key {key!r}; upload it first (aws s3 cp job.json "
                f"s3://{bucket}/{key} --endpoint-url {self.endpoint_url})"
            ) from None
        except BotoCoreError as error:
            raise InvalidRequestError(
                f"documentSource {source!r}: the local S3 ({self.endpoint_url}) cannot be "
                f"reached: {error}"
            ) from None
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequestError(f"documentSource {source!r} is not UTF-8 text") from None

    def presign(self, document: str, expires_seconds: int = DEFAULT_EXPIRES_SECONDS) -> str:
        """``document`` with every ``${aws:iot:s3-presigned-url:URL}`` replaced by a fresh
        presigned GET URL of that object on the local S3; other text is left as it is."""

        def replace(found: re.Match[str]) -> str:
            location = s3_location(found.group(1))
            if location is None:
                return found.group(0)
            url = self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": location[0], "Key": location[1]},
                ExpiresIn=expires_seconds,
            )
            # Inside a JSON string: the URL holds no quote or backslash to escape.
            return url

        return PRESIGNED_PLACEHOLDER.sub(replace, document)


class S3Server:
    """moto's S3 server as a child process on ``127.0.0.1:port`` with TLS."""

    def __init__(
        self, port: int, certificate: os.PathLike, private_key: os.PathLike, log_path: Path
    ):
        self.port = port
        self.url = f"https://localhost:{port}"
        self._certificate = certificate
        self._private_key = private_key
        self._log_path = log_path
        self._process: Optional[subprocess.Popen] = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        """Start the server; return once it accepts connections. Raises S3Error."""
        if self.running:
            return
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port),
            "-c", str(self._certificate), "-k", str(self._private_key),
        ]  # fmt: skip
        with open(self._log_path, "ab") as output:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                preexec_fn=child_preexec,  # noqa: PLW1509 - only calls prctl, see processes.py
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    break
            except OSError:
                pass
            if self._process.poll() is not None:
                raise S3Error(f"the local S3 server (moto) exited; see {self._log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise S3Error(f"the local S3 server did not listen on {self.port} in {timeout}s")
            time.sleep(0.05)
        log.info("started local S3 (moto) pid %s on %s", self._process.pid, self.url)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
