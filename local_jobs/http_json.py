"""What the local service's two HTTPS-or-HTTP front ends share: AWS's JSON responses.

The control plane (``control_plane.py``) and the device API (``jobs_data.py``) each subclass
``JsonRequestHandler`` and write ``_handle``; the request body, the response with AWS's
``x-amzn-RequestId`` and ``x-amzn-ErrorType`` headers, and quiet access logging are here. Their
servers subclass ``BackgroundHTTPServer``: served from a daemon thread, stopped by
``shutdown()``.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping, Optional

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


class BackgroundHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that ``start()`` serves from a daemon thread named
    ``thread_name``; ``shutdown()`` stops serving, closes the socket and joins the thread."""

    thread_name = "http"
    _thread: Optional[threading.Thread] = None

    def start(self) -> None:
        """Serve requests in a daemon thread."""
        # A short poll interval keeps shutdown() quick; an idle wake-up costs nothing to speak of.
        self._thread = threading.Thread(
            target=self.serve_forever, args=(0.05,), name=self.thread_name, daemon=True
        )
        self._thread.start()

    def shutdown(self) -> None:
        """Stop serving, close the listening socket and join the serving thread."""
        super().shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
