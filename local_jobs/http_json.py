"""What the local service's two HTTPS-or-HTTP front ends share: AWS's JSON responses.

The control plane (``control_plane.py``) and the device API (``jobs_data.py``) each subclass
``JsonRequestHandler`` and write ``_handle``; the request body, the response with AWS's
``x-amzn-RequestId`` and ``x-amzn-ErrorType`` headers, and quiet access logging are here.
"""

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler
from typing import Any, Mapping

log = logging.getLogger(__name__)


class JsonRequestHandler(BaseHTTPRequestHandler):
    """A request handler answering JSON the way AWS's REST-JSON services do."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        raise NotImplementedError

    def _read_body(self) -> bytes:
        """The request body (empty, and the connection closed, for a bad Content-Length)."""
        length = self.headers.get("Content-Length")
        try:
            return self.rfile.read(int(length)) if length else b""
        except ValueError:
            self.close_connection = True
            return b""

    def _send(
        self, status: int, body: Mapping[str, Any], request_id: str, error_type: str = ""
    ) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", request_id)
        if error_type:
            self.send_header("x-amzn-ErrorType", error_type)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base signature)
        log.debug("%s %s", self.address_string(), format % args)
