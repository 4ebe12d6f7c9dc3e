"""Helpers for the managed-template tests: the AWS templates, stand-in programs, an HTTPS
server trusted through a test CA, settings sections, and an agent process to kill and restart.
"""

from __future__ import annotations

import copy
import json
import re
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from agent.job import JobContext
from local_jobs import agent_process

REPO = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "managed_child.py"


def _template(name: str, kind: str, handler: str = "", args: Optional[List[str]] = None) -> Dict:
    if kind == "runCommand":
        action = {
            "name": name,
            "type": "runCommand",
            "input": {"command": "${aws:iot:parameter:command}"},
            "runAsUser": "${aws:iot:parameter:runAsUser}",
        }
    else:
        action_input: Dict[str, Any] = {"handler": handler}
        if args is not None:
            action_input["args"] = args
        action_input["path"] = "${aws:iot:parameter:pathToHandler}"
        action = {
            "name": name,
            "type": "runHandler",
            "input": action_input,
            "runAsUser": "${aws:iot:parameter:runAsUser}",
        }
    return {"version": "1.0", "steps": [{"action": action}]}


# The AWS managed job templates' documents (../shared/jobs-api.md §2.2), placeholders kept.
TEMPLATES: Dict[str, Dict[str, Any]] = {
    "AWS-Reboot": _template("Reboot", "runHandler", "reboot.sh"),
    "AWS-Download-File": _template(
        "Download-File",
        "runHandler",
        "download-file.sh",
        ["${aws:iot:parameter:downloadUrl}", "${aws:iot:parameter:filePath}"],
    ),
    "AWS-Install-Application": _template(
        "Install-Application",
        "runHandler",
        "install-packages.sh",
        ["${aws:iot:parameter:packages}"],
    ),
    "AWS-Remove-Application": _template(
        "Remove-Application", "runHandler", "remove-packages.sh", ["${aws:iot:parameter:packages}"]
    ),
    "AWS-Start-Application": _template(
        "Start-Application", "runHandler", "start-services.sh", ["${aws:iot:parameter:services}"]
    ),
    "AWS-Stop-Application": _template(
        "Stop-Application", "runHandler", "stop-services.sh", ["${aws:iot:parameter:services}"]
    ),
    "AWS-Restart-Application": _template(
        "Restart-Application",
        "runHandler",
        "restart-services.sh",
        ["${aws:iot:parameter:services}"],
    ),
    "AWS-Run-Command": _template("Run-Command", "runCommand"),
}

_PARAMETER = re.compile(r"\$\{aws:iot:parameter:([A-Za-z0-9_]+)\}")


def substitute(template: Mapping[str, Any], **parameters: str) -> Dict[str, Any]:
    """The template document with ``${aws:iot:parameter:NAME}`` replaced as AWS IoT does;
    optional parameters left out become "" (runAsUser, pathToHandler)."""
    defaults = {"runAsUser": "", "pathToHandler": ""}
    defaults.update(parameters)

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return _PARAMETER.sub(lambda found: defaults[found.group(1)], value)
        if isinstance(value, dict):
            return {key: fill(item) for key, item in value.items()}
        if isinstance(value, list):
            return [fill(item) for item in value]
        return value

    return fill(copy.deepcopy(dict(template)))


def document(template: str, **parameters: str) -> Dict[str, Any]:
    """The named AWS template's document with ``parameters`` substituted."""
    return substitute(TEMPLATES[template], **parameters)


def make_job(job_id: str = "job-1", attempt: int = 1, execution_number: int = 1) -> JobContext:
    """A real JobContext, as the job client makes it, not connected to any service."""
    return JobContext(job_id, execution_number, attempt, lambda: None)


def make_standin(folder: Path, name: str, exit_code: int = 0, output: str = "") -> Path:
    """An executable that appends its arguments (a JSON list) to ``<name>.calls`` and exits
    with ``exit_code``, after writing ``output`` to stdout and stderr."""
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / name
    calls = folder / f"{name}.calls"
    program.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"with open({str(calls)!r}, 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"sys.stdout.write({output!r})\n"
        f"sys.stderr.write({output!r})\n"
        f"sys.exit({exit_code})\n"
    )
    program.chmod(0o755)
    return program


def standin_calls(program: Path) -> List[List[str]]:
    """The argument lists the stand-in was called with, in order."""
    calls = program.with_name(program.name + ".calls")
    if not calls.exists():
        return []
    return [json.loads(line) for line in calls.read_text().splitlines()]


class FileServer:
    """An HTTPS server on 127.0.0.1 with a certificate from a test CA.

    ``files`` maps a path (``/a.bin``) to bytes. ``cut_after`` (bytes) breaks the first
    response to a path after that many body bytes, once, to test resuming. Range requests are
    served with 206. ``requests`` records (path with query, Range header).
    """

    def __init__(self, certificate: Path, private_key: Path) -> None:
        self.files: Dict[str, bytes] = {}
        self.redirects: Dict[str, str] = {}
        self.cut_after: Dict[str, int] = {}
        self.requests: List[tuple] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path, _, _ = self.path.partition("?")
                byte_range = self.headers.get("Range")
                server.requests.append((self.path, byte_range))
                if path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                found = re.fullmatch(r"bytes=(\d+)-", byte_range or "")
                if found:
                    start = int(found.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                cut = server.cut_after.pop(path, None)
                if cut is not None:
                    self.wfile.write(payload[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(payload)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(certificate), str(private_key))
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, path: str, query: str = "") -> str:
        return f"https://localhost:{self.port}{path}" + (f"?{query}" if query else "")

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


class ManagedAgentProcess(agent_process.AgentProcess):
    """``tests/managed_child.py``: jobs_agent.run_agent with the managed handlers, as a
    process (started at once) that a test can kill (a power cut) and start again."""

    def __init__(self, settings_path: Path, log_path: Path) -> None:
        super().__init__([sys.executable, str(CHILD), "-c", str(settings_path)], log_path)
        self.start()

    def close(self) -> None:
        self.kill()


def make_handler(
    state_dir: Path, step_timeout_seconds: float = 30.0, apt: Any = None, **sections: Any
):
    """A ManagedJobHandler built from settings objects: ``services=ServicesSettings(...)``...;
    ``apt`` (AptSettings) enables Install-Application."""
    from agent.managed import build_actions
    from agent.managed.settings import ManagedSettings
    from agent.managed.steps import ManagedJobHandler

    managed = ManagedSettings(
        state_dir=state_dir, step_timeout_seconds=step_timeout_seconds, **sections
    )
    actions = build_actions(managed, apt_settings=apt)
    return ManagedJobHandler(actions, state_dir, step_timeout_seconds)
