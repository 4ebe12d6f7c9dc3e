"""Make statusDetails fit the Jobs service's limits (pure, no I/O).

Limits (../shared/jobs-api.md §1.8): a map of string to string, keys matching
``[a-zA-Z0-9:_-]{1,128}``, values of 1 to 1024 characters without control characters, and at
most 10 pairs to stay inside the strictest documented bound.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Dict, Mapping

MAX_PAIRS = 10
MAX_KEY_CHARS = 128
MAX_VALUE_CHARS = 1024
TRUNCATION_MARK = "..."

_KEY_BAD_CHARS = re.compile(r"[^a-zA-Z0-9:_-]")
# The service's value pattern is [^\p{C}]; \n and \t are kept because the service accepts
# them in practice and multi-line tool output reads badly without them (jobs-api.md §1.8).
_KEPT_CONTROLS = frozenset("\n\t")


def fit_key(key: Any) -> str:
    """Return ``key`` as a valid statusDetails key: bad characters become ``_``, cut to 128.

    Returns "" when nothing is left (the caller drops such a pair).
    """
    return _KEY_BAD_CHARS.sub("_", str(key))[:MAX_KEY_CHARS]


def fit_value(value: Any) -> str:
    """Return ``value`` as a valid statusDetails value, keeping the tail of long text.

    Booleans become ``true``/``false``, other values ``str(value)``; control characters other
    than newline and tab are removed. Text over 1024 characters keeps its last characters
    behind a ``...`` mark, because the end of a tool's output says why it failed.
    Returns "" when nothing is left (the caller drops such a pair).
    """
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    text = "".join(
        ch for ch in text if ch in _KEPT_CONTROLS or not unicodedata.category(ch).startswith("C")
    )
    if len(text) > MAX_VALUE_CHARS:
        text = TRUNCATION_MARK + text[-(MAX_VALUE_CHARS - len(TRUNCATION_MARK)) :]
    return text


def fit_status_details(details: Mapping[Any, Any]) -> Dict[str, str]:
    """Return a copy of ``details`` that the Jobs service accepts as statusDetails.

    Pairs keep their order; the first 10 usable ones are kept (put the important ones first).
    A pair whose key or value is empty after fitting, or whose value is None, is dropped; when
    two keys fit to the same text the first wins. Raises TypeError if ``details`` is not a
    mapping.
    """
    if not isinstance(details, Mapping):
        raise TypeError(f"statusDetails must be a mapping, got {type(details).__name__}")
    fitted: Dict[str, str] = {}
    for key, value in details.items():
        if len(fitted) >= MAX_PAIRS:
            break
        if value is None:
            continue
        fitted_key = fit_key(key)
        fitted_value = fit_value(value)
        if fitted_key and fitted_value and fitted_key not in fitted:
            fitted[fitted_key] = fitted_value
    return fitted
