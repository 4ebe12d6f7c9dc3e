"""Recognise and check managed-template job documents (pure: no I/O).

Two forms are accepted, as the AWS IoT Device Client accepts them (../shared/jobs-api.md §2.2):

- schema 1.0: ``{"version": "1.0", "includeStdOut": ..., "steps": [{"action": {...}}],
  "finalStep": {"action": {...}}}``, each action ``{"name", "type": "runHandler" | "runCommand",
  "input": {"handler", "args", "path"} | {"command"}, "runAsUser", "ignoreStepFailure",
  "allowStdErr"}``;
- the older form: ``{"operation": "install-packages.sh", "args": [...], "path": ...,
  "includeStdOut": ..., "allowStdErr": n}``, one runHandler step.

A step's *action* is named by its handler script (``install-packages.sh`` ->
``Install-Application``) or by its type (``runCommand`` -> ``Run-Command``), never by the
free-text ``name``: AWS's own samples name the install step "Install Packages". The handler
script is only a name here: this agent runs its built-in code for it, never a file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

from agent.errors import JobRejected

SCHEMA_VERSION = "1.0"
RUN_HANDLER = "runHandler"
RUN_COMMAND = "runCommand"

INSTALL = "Install-Application"
REMOVE = "Remove-Application"
START = "Start-Application"
STOP = "Stop-Application"
RESTART = "Restart-Application"
REBOOT = "Reboot"
DOWNLOAD = "Download-File"
RUN = "Run-Command"

HANDLER_ACTIONS: Mapping[str, str] = {
    "install-packages.sh": INSTALL,
    "remove-packages.sh": REMOVE,
    "start-services.sh": START,
    "stop-services.sh": STOP,
    "restart-services.sh": RESTART,
    "reboot.sh": REBOOT,
    "download-file.sh": DOWNLOAD,
}
ACTIONS: Tuple[str, ...] = (INSTALL, REMOVE, START, STOP, RESTART, REBOOT, DOWNLOAD, RUN)
# "path" values that mean "the handler directory the agent knows": nothing is read from them.
DEFAULT_PATHS = frozenset(("", "default"))
MAX_STEPS = 32
MAX_USER_CHARS = 256
PLACEHOLDER = re.compile(r"\$\{aws:iot:[^}]*\}")
INVALID = "INVALID_DOCUMENT"


@dataclass(frozen=True)
class Step:
    """One action of a managed document, checked for shape (not yet for what it asks)."""

    where: str  # "steps[0]" or "finalStep": names the step in reasons
    name: str  # the free-text name the document gives
    action: str  # one of ACTIONS, or "" when the handler is not one this agent knows
    type: str  # runHandler or runCommand
    handler: str = ""
    args: Tuple[str, ...] = ()
    path: str = ""
    command: Tuple[str, ...] = ()
    run_as_user: str = ""
    ignore_failure: bool = False
    allow_stderr: Optional[int] = None

    @property
    def label(self) -> str:
        """How logs and statusDetails name the step: ``steps[0] (Download-File)``."""
        return f"{self.where} ({self.action or self.handler or self.name})"


@dataclass(frozen=True)
class ManagedDocument:
    """A parsed managed document: ``steps`` run in order, ``final_step`` after all succeed."""

    steps: Tuple[Step, ...]
    final_step: Optional[Step]
    include_stdout: bool
    old_form: bool

    def all_steps(self) -> Tuple[Step, ...]:
        """The steps followed by the final step, if any."""
        return self.steps + ((self.final_step,) if self.final_step is not None else ())


def is_managed_document(document: Any) -> bool:
    """True for a schema-1.0 (``version`` + ``steps``) or old-form (``operation``) document."""
    if not isinstance(document, dict) or "jobType" in document:
        return False
    return "steps" in document or "version" in document or "operation" in document


MANAGED_TEMPLATE = "managed-template"


def get_document_kind(document: Any) -> Optional[str]:
    """``"managed-template"`` for a managed document, else None: the JobClient filter."""
    return MANAGED_TEMPLATE if is_managed_document(document) else None


def get_managed_action(document: Any) -> Optional[str]:
    """The action of a managed document's first step (``Install-Application``...).

    None when ``document`` is not a managed document. A handler this agent does not know gives
    its own name (``custom.sh``), so that no built-in registration matches it.
    """
    if not is_managed_document(document):
        return None
    if "version" not in document and "steps" not in document:
        operation = document.get("operation")
        return HANDLER_ACTIONS.get(operation, str(operation)) if operation else None
    steps = document.get("steps")
    if not isinstance(steps, list) or not steps or not isinstance(steps[0], dict):
        return None
    action = steps[0].get("action")
    if not isinstance(action, dict):
        return None
    if action.get("type") == RUN_COMMAND:
        return RUN
    handler = (
        action.get("input", {}).get("handler") if isinstance(action.get("input"), dict) else None
    )
    if isinstance(handler, str) and handler:
        return HANDLER_ACTIONS.get(handler, handler)
    return None


def _reject(reason: str) -> JobRejected:
    return JobRejected(reason, INVALID)


def _flag(value: Any, where: str) -> bool:
    """``true``/``false`` as JSON booleans or as the strings the device client reads."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _reject(f"{where}: expected true or false, got {value!r}")


def _text(mapping: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    value = mapping.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _reject(f"{where}.{key}: expected a string, got {value!r}")
    return value


def split_command(text: str) -> Tuple[str, ...]:
    """Split a Run-Command ``command`` at commas; ``\\,`` is a comma inside a word.

    This is the device client's rule (one argv element per comma-separated piece, no shell).
    """
    words: List[str] = []
    current: List[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and text[index + 1 : index + 2] == ",":
            current.append(",")
            index += 2
            continue
        if char == ",":
            words.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    words.append("".join(current))
    return tuple(words)


def _parse_action(action: Any, where: str) -> Step:
    if not isinstance(action, dict):
        raise _reject(f"{where}.action: expected an object, got {action!r}")
    name = _text(action, "name", f"{where}.action")
    kind = _text(action, "type", f"{where}.action")
    user = _text(action, "runAsUser", f"{where}.action")
    if len(user) > MAX_USER_CHARS:
        raise _reject(f"{where}.action.runAsUser: longer than {MAX_USER_CHARS} characters")
    ignore = _flag(action.get("ignoreStepFailure", False), f"{where}.action.ignoreStepFailure")
    allow_stderr = action.get("allowStdErr")
    if allow_stderr is not None and (
        not isinstance(allow_stderr, int) or isinstance(allow_stderr, bool) or allow_stderr < 0
    ):
        raise _reject(f"{where}.action.allowStdErr: expected a whole number, got {allow_stderr!r}")
    raw_input = action.get("input")
    if not isinstance(raw_input, dict):
        raise _reject(f"{where}.action.input: expected an object, got {raw_input!r}")
    where_input = f"{where}.action.input"
    if kind == RUN_HANDLER:
        handler = _text(raw_input, "handler", where_input)
        if not handler:
            raise _reject(f"{where_input}.handler: missing; it names the handler to run")
        args = raw_input.get("args", [])
        if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
            raise _reject(f"{where_input}.args: expected a list of strings, got {args!r}")
        return Step(
            where=where,
            name=name,
            action=HANDLER_ACTIONS.get(handler, ""),
            type=kind,
            handler=handler,
            args=tuple(args),
            path=_text(raw_input, "path", where_input),
            run_as_user=user,
            ignore_failure=ignore,
            allow_stderr=allow_stderr,
        )
    if kind == RUN_COMMAND:
        command = raw_input.get("command")
        if not isinstance(command, str) or not command.strip():
            raise _reject(
                f"{where_input}.command: expected a comma-separated command, got {command!r}"
            )
        words = split_command(command)
        if not words[0] or any(char.isspace() for char in words[0]):
            raise _reject(
                f"{where_input}.command: the program {words[0]!r} is empty or holds blanks "
                "(words are separated by commas, not spaces)"
            )
        return Step(
            where=where,
            name=name,
            action=RUN,
            type=kind,
            command=words,
            run_as_user=user,
            ignore_failure=ignore,
            allow_stderr=allow_stderr,
        )
    raise _reject(f"{where}.action.type: expected runHandler or runCommand, got {kind!r}")


def _find_placeholder(value: Any) -> Optional[str]:
    if isinstance(value, str):
        found = PLACEHOLDER.search(value)
        return found.group(0) if found else None
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = _find_placeholder(item)
            if found:
                return found
    return None


def parse_managed_document(document: Any) -> ManagedDocument:
    """Check the shape of a managed document and return its steps.

    Raises JobRejected (errorCode INVALID_DOCUMENT) naming the field at fault: a version other
    than 1.0, no steps, a step that is not an action object, an unknown action type, a
    parameter placeholder that was never substituted.
    """
    if not is_managed_document(document):
        raise _reject("not a managed-template document (no version/steps or operation)")
    placeholder = _find_placeholder(document)
    if placeholder:
        raise _reject(
            f"the document still holds the placeholder {placeholder}: create the job from the "
            "template with --document-parameters, or substitute the value"
        )
    include_stdout = _flag(document.get("includeStdOut", False), "includeStdOut")
    if "version" not in document and "steps" not in document:
        operation = document.get("operation")
        if not isinstance(operation, str) or not operation:
            raise _reject(f"operation: expected the name of a handler, got {operation!r}")
        action = {
            "name": operation,
            "type": RUN_HANDLER,
            "input": {
                "handler": operation,
                "args": document.get("args", []),
                "path": document.get("path", ""),
            },
            "allowStdErr": document.get("allowStdErr"),
        }
        step = _parse_action(action, "operation")
        return ManagedDocument((step,), None, include_stdout, old_form=True)
    version = document.get("version")
    if version != SCHEMA_VERSION:
        raise _reject(f"version: expected {SCHEMA_VERSION!r}, got {version!r}")
    raw_steps = document.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise _reject('steps: expected a non-empty list of {"action": {...}} objects')
    if len(raw_steps) > MAX_STEPS:
        raise _reject(f"steps: at most {MAX_STEPS} steps, got {len(raw_steps)}")
    steps = []
    for index, raw in enumerate(raw_steps):
        if not isinstance(raw, dict) or "action" not in raw:
            raise _reject(f"steps[{index}]: expected an object with an action, got {raw!r}")
        steps.append(_parse_action(raw["action"], f"steps[{index}]"))
    final_step = None
    raw_final = document.get("finalStep")
    if raw_final is not None:
        if not isinstance(raw_final, dict) or "action" not in raw_final:
            raise _reject(f"finalStep: expected an object with an action, got {raw_final!r}")
        final_step = _parse_action(raw_final["action"], "finalStep")
    return ManagedDocument(tuple(steps), final_step, include_stdout, old_form=False)


def split_words(text: str) -> Tuple[str, ...]:
    """The blank-separated words of a template argument (``packages``, ``services``)."""
    return tuple(text.split())


def words_of(args: Tuple[str, ...]) -> Tuple[str, ...]:
    """All words of a step's args: the templates send one space-separated string, the device
    client's samples one word per element; both mean the same list."""
    words: List[str] = []
    for arg in args:
        words.extend(split_words(arg))
    return tuple(words)


def mask_url(url: str) -> str:
    """``url`` without its query string (and fragment): a presigned URL is fresh on every
    delivery of the same job, so only scheme, host and path identify the object."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.scheme.lower() not in ("http", "https") or not (parts.query or parts.fragment):
        return url
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    return value


def masked_document_key(document: Any) -> str:
    """A text that is equal for two deliveries of the same document that differ only in the
    query strings of their URLs (fresh presigned S3 URLs)."""
    return json.dumps(_masked(document), sort_keys=True, separators=(",", ":"))


def same_document(first: Any, second: Any) -> bool:
    """True when the two documents are the same job, presigned query strings aside."""
    return masked_document_key(first) == masked_document_key(second)


def describe_steps(document: ManagedDocument) -> Dict[str, str]:
    """A short statusDetails-friendly summary of what the document asks."""
    return {"steps": ", ".join(step.label for step in document.all_steps())}
