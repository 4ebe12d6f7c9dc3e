"""Which handler runs a job document: registrations, the first match, and why none matched.

A registration is ``(filter, value, handler)``: the handler runs documents for which
``filter(document) == value``; the first registration that matches wins. Pure: no I/O and no
protocol here (job_client.py runs the handler it selects).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

from agent.job import Handler
from agent.messages import first_duplicate_key

log = logging.getLogger(__name__)

Filter = Callable[[Any], Any]

MAX_ASKED_CHARS = 80  # how much of an unknown value a reason quotes


@dataclass(frozen=True)
class Registration:
    """One ``add_handler`` call: ``handler`` runs documents where ``filter(document) ==
    value``; ``safe_to_rerun`` says whether a run interrupted by an agent restart may start
    again; ``handles`` says in words what it handles (for reasons)."""

    filter: Filter
    value: Any
    handler: Handler
    safe_to_rerun: bool
    handles: str


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _quoted(value: Any) -> str:
    text = repr(value)
    if len(text) > MAX_ASKED_CHARS:
        text = text[: MAX_ASKED_CHARS - 3] + "..."
    return text


def filter_label(filter: Filter) -> str:
    """How a reason names what ``filter`` reads: its ``label`` attribute (``jobType``), else
    its name without ``get_`` (``get_job_type`` -> ``job type``)."""
    label = getattr(filter, "label", None)
    if isinstance(label, str) and label:
        return label
    name = getattr(filter, "__name__", "") or "filter"
    if name.startswith("get_"):
        name = name[4:]
    return name.replace("_", " ")


def _and_list(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


class Handlers:
    """The registrations, in the order they were added."""

    def __init__(self) -> None:
        self._registrations: List[Registration] = []

    def add(
        self,
        filter: Filter,
        value: Any,
        handler: Handler,
        safe_to_rerun: Optional[bool] = None,
    ) -> Registration:
        """Register ``handler`` (see the module docstring). ``safe_to_rerun=None`` takes
        ``handler.safe_to_rerun`` (default False). Raises TypeError for a filter or handler
        that is not callable."""
        if not callable(filter):
            raise TypeError(f"filter must be callable, got {filter!r}")
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        if safe_to_rerun is None:
            safe_to_rerun = bool(getattr(handler, "safe_to_rerun", False))
        handles = getattr(handler, "handles", None)
        if not isinstance(handles, str) or not handles:
            handles = _value_text(value)
        registration = Registration(filter, value, handler, safe_to_rerun, handles)
        self._registrations.append(registration)
        return registration

    def select(self, document: Any) -> Optional[Registration]:
        """The first registration whose ``filter(document) == value``, or None."""
        for registration in self._registrations:
            try:
                if registration.filter(document) == registration.value:
                    return registration
            except Exception as error:  # a filter choking on a document does not match
                log.debug("filter %r raised %s: no match", registration.filter, error)
        return None

    def explain_no_match(self, document: Any) -> str:
        """Why no registration takes ``document``, in an operator's words: what it asked for
        and what this agent handles (``unknown jobType 'MAKE_COFFEE'; this agent handles
        APT_UPDATE and ...``)."""
        asked = ""
        labels: List[str] = []
        for registration in self._registrations:
            label = filter_label(registration.filter)
            try:
                value = registration.filter(document)
            except Exception:  # a filter choking on a document: it asked for nothing we read
                value = None
            if value is not None and not isinstance(value, bool) and not asked:
                asked = f"unknown {label} {_quoted(value)}"
            if label not in labels:
                labels.append(label)
        if not asked:
            asked = f"the job document names no {' or '.join(labels) or 'job type'}"
        handled = list(dict.fromkeys(r.handles for r in self._registrations))
        if not handled:
            return f"{asked}; this agent has no handlers"
        return f"{asked}; this agent handles {_and_list(handled)}"


def document_problem(document: Any, cut: bool) -> str:
    """Why a job document cannot be handed to any handler ("" when it can); ``cut``: parts
    nested too deeply to read were cut from the message."""
    if cut:
        return "job document is nested too deeply to read"
    if not isinstance(document, dict):
        return "job document is not a JSON object"
    duplicate = first_duplicate_key(document)
    if duplicate is not None:
        return f"job document is ambiguous: key {duplicate!r} is given more than once"
    return ""
