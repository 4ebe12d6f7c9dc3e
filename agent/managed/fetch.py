"""Download-File's HTTP part: fetch a URL into a partial file, retrying and resuming.

Imported by ``agent.managed.download`` only when a download runs, so that an agent that never
downloads does not keep urllib, http.client and email resident (see download.py for the rules).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional, Tuple
from urllib.parse import urlsplit

from agent.errors import JobFailed, UrlRefused
from agent.managed.document import mask_url
from agent.managed.settings import DownloadSettings
from agent.managed.steps import NOT_ALLOWED, StepRun, stop_step

CHUNK_BYTES = 64 * 1024
PROGRESS_SECONDS = 1.0


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects only to HTTPS URLs on allowed hosts."""

    def __init__(self, check_url: Callable[[str], None]) -> None:
        super().__init__()
        self._check_url = check_url

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        self._check_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def opener(
    settings: DownloadSettings, check_url: Callable[[str], None]
) -> urllib.request.OpenerDirector:
    """An HTTPS-only opener: the system CAs plus ``[download] ca_file``; redirects checked by
    ``check_url`` (which raises UrlRefused)."""
    context = ssl.create_default_context()
    if settings.ca_file is not None:
        context.load_verify_locations(cafile=str(settings.ca_file))
    return urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context),
        _HttpsOnlyRedirects(check_url),
    )


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path``, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Retry(Exception):
    """A failure worth another try (network error, 5xx, cut-off body)."""


def download(
    settings: DownloadSettings,
    run: StepRun,
    opener: urllib.request.OpenerDirector,
    url: str,
    part: Path,
    resume: bool,
) -> int:
    """Fetch ``url`` into ``part``, retrying and resuming; the final size. Raises JobFailed."""
    shown = mask_url(url)
    attempts = settings.retries + 1
    deadline = time.monotonic() + run.timeout
    last_error = ""
    for attempt in range(1, attempts + 1):
        if run.job.should_stop():
            stop_step(run, "download stopped")
        offset = part.stat().st_size if (resume and part.exists()) else 0
        if offset == 0:
            part.write_bytes(b"")
        try:
            size = _fetch_once(settings, run, opener, url, part, offset, deadline)
            return size
        except _Retry as error:
            last_error = str(error)
            resume = True
            if attempt == attempts or time.monotonic() >= deadline:
                break
            run.job.log.warning(
                "download of %s: %s; retry %d of %d", shown, error, attempt, settings.retries
            )
            if run.job.wait(settings.retry_delay_seconds * attempt):
                stop_step(run, "download stopped")
    raise JobFailed(
        f"download of {shown} failed after {attempts} tries: {last_error}", "DOWNLOAD_FAILED"
    )


def _content_range_start(value: Optional[str]) -> Tuple[Optional[int], Optional[int]]:
    found = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value or "")
    if not found:
        return None, None
    total = None if found.group(2) == "*" else int(found.group(2))
    return int(found.group(1)), total


def _fetch_once(
    settings: DownloadSettings,
    run: StepRun,
    opener: urllib.request.OpenerDirector,
    url: str,
    part: Path,
    offset: int,
    deadline: float,
) -> int:
    request = urllib.request.Request(url, headers={"User-Agent": "iot-jobs-agent"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = opener.open(request, timeout=settings.timeout_seconds)
    except UrlRefused as error:
        raise JobFailed(str(error), NOT_ALLOWED) from None
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            part.write_bytes(b"")
            raise _Retry("the server refused to resume; starting over") from None
        if error.code >= 500 or error.code in (408, 429):
            raise _Retry(f"HTTP {error.code} {error.reason}") from None
        raise JobFailed(
            f"HTTP {error.code} {error.reason} for {mask_url(url)}", "HTTP_ERROR"
        ) from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, ssl.SSLCertVerificationError):
            raise JobFailed(
                f"the certificate of {urlsplit(url).hostname} is not trusted: "
                f"{error.reason.verify_message}",
                "TLS_ERROR",
            ) from None
        raise _Retry(f"{error.reason}") from None
    except (OSError, http.client.HTTPException) as error:
        raise _Retry(f"{type(error).__name__}: {error}") from None
    with response:
        status = response.status
        total: Optional[int] = None
        if status == 206 and offset:
            start, total = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                part.write_bytes(b"")
                raise _Retry(f"the server resumed at {start}, not {offset}; starting over")
        elif status == 200:
            offset = 0
        else:
            raise JobFailed(f"unexpected HTTP status {status}", "HTTP_ERROR")
        length = response.headers.get("Content-Length")
        if total is None and length is not None and length.isdigit():
            total = offset + int(length)
        if total is not None and total > settings.max_bytes:
            raise JobFailed(
                f"the file is {total} bytes, over [download] max_bytes {settings.max_bytes}",
                "TOO_LARGE",
            )
        return _copy_body(settings, run, response, part, offset, total, deadline)


def _copy_body(
    settings: DownloadSettings,
    run: StepRun,
    response: Any,
    part: Path,
    offset: int,
    total: Optional[int],
    deadline: float,
) -> int:
    written = offset
    next_report = 0.0
    with open(part, "r+b" if offset else "wb") as stream:
        stream.seek(offset)
        stream.truncate()
        try:
            while True:
                if run.job.should_stop():
                    stream.flush()
                    os.fsync(stream.fileno())
                    stop_step(run, "download stopped")
                if time.monotonic() >= deadline:
                    raise JobFailed(
                        f"download ran past its time limit of {run.timeout:g} s", "TIMEOUT"
                    )
                chunk = response.read(CHUNK_BYTES)
                if not chunk:
                    break
                written += len(chunk)
                if written > settings.max_bytes:
                    raise JobFailed(
                        f"the file is over [download] max_bytes {settings.max_bytes}", "TOO_LARGE"
                    )
                stream.write(chunk)
                now = time.monotonic()
                if now >= next_report:
                    next_report = now + PROGRESS_SECONDS
                    shown = f"{written} of {total}" if total else f"{written}"
                    run.job.report_progress(
                        {"step": run.step.label, "downloaded": f"{shown} bytes"}
                    )
        except (OSError, http.client.HTTPException, socket.timeout) as error:
            stream.flush()
            os.fsync(stream.fileno())
            raise _Retry(f"connection broke after {written} bytes: {error}") from None
        stream.flush()
        os.fsync(stream.fileno())
    if total is not None and written != total:
        raise _Retry(f"got {written} of {total} bytes")
    return written
