"""Read the JSON messages the Jobs service sends, safely (pure: no I/O).

Messages come from the network, so reading one must never raise anything but ValueError:

- Nesting deeper than ``MAX_DEPTH`` is cut: each array or object that opens at depth
  ``MAX_DEPTH`` is replaced by ``null`` and the message is marked ``cut``, so its ids and tokens
  can still be read and a job document that was cut is REJECTED rather than run or silently
  dropped (a dropped start-next reply would be claimed again and again). The depth is the
  agent's, not the interpreter's: Python 3.9-3.12's JSON reader gives up near 1,000 levels
  (RecursionError), 3.13's near 10,000, and the same message must get the same answer on every
  supported Python.
- Integers longer than ``MAX_INT_DIGITS`` digits are read as floats (so ``inf``, as JSON's
  ``1e999`` is): Python 3.11 and later (and 3.9/3.10 updates) refuse to convert them and the
  whole message would be unreadable, while Debian 11's 3.9.2 reads them; the same message
  must be read the same way on both.
- Objects remember keys that appear more than once (JSON keeps the last), so an ambiguous job
  document can be REJECTED instead of run with whichever value came last.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Optional, Tuple

# The deepest nesting read as sent (the message's own object is level 1; a job document sits
# at level 3). Far below where any supported Python's JSON reader gives up, from any stack.
MAX_DEPTH = 64
# Python's default int_max_str_digits (3.11+).
MAX_INT_DIGITS = 4300


class JsonObject(dict):
    """A JSON object; ``duplicate_keys`` names keys given more than once (the last value won)."""

    duplicate_keys: Tuple[str, ...] = ()
    # Every value given, the overridden ones too: they count for the nesting depth.
    all_values: Tuple[Any, ...] = ()


def _object(pairs: List[Tuple[str, Any]]) -> JsonObject:
    obj = JsonObject(pairs)
    if len(obj) != len(pairs):
        obj.all_values = tuple(value for _, value in pairs)
        seen: Dict[str, int] = {}
        for key, _ in pairs:
            seen[key] = seen.get(key, 0) + 1
        obj.duplicate_keys = tuple(key for key, count in seen.items() if count > 1)
    return obj


def _int(text: str) -> Any:
    if len(text) - text.startswith("-") > MAX_INT_DIGITS:
        return float(text)
    return int(text)


def _loads(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_object, parse_int=_int)


def parse_message(data: bytes) -> Tuple[Dict[str, Any], bool]:
    """The JSON object in ``data`` and whether too deep a part of it was cut to ``null``.

    Raises ValueError (naming why) when ``data`` is not UTF-8 JSON text of an object.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 ({error.reason})") from None
    cut = False
    try:
        value = _loads(text)
        too_deep = _nested_deeper_than(value, MAX_DEPTH)
    except RecursionError:
        too_deep = True
    except ValueError as error:
        raise ValueError(f"not JSON ({error})") from None
    if too_deep:
        text, cut = cap_depth(text, MAX_DEPTH)
        try:
            value = _loads(text)
        except RecursionError:  # cannot happen once capped; never let it escape
            raise ValueError("nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object but {type(value).__name__}")
    return value, cut


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects in ``value`` nest more than ``limit`` levels deep."""
    pending = [(value, 1)] if isinstance(value, (dict, list)) else []
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children = getattr(item, "all_values", ()) or item.values()
        else:
            children = item
        for child in children:
            if isinstance(child, (dict, list)):
                if depth == limit:
                    return True
                pending.append((child, depth + 1))
    return False


def cap_depth(text: str, limit: int) -> Tuple[str, bool]:
    """``text`` with every array or object that opens at nesting ``limit`` replaced by
    ``null``; and whether anything was replaced. Strings are respected; text that is not
    JSON stays not JSON."""
    out: List[str] = []
    depth = 0
    start = index = 0
    cut = False
    while True:
        found = next(_brackets(text, index), None)
        if found is None:
            break
        position, char = found
        if char in "[{" and depth == limit:
            out.append(text[start:position])
            out.append("null")
            start = index = _container_end(text, position)
            cut = True
            continue
        depth += 1 if char in "[{" else -1
        index = position + 1
    out.append(text[start:])
    return "".join(out), cut


def _brackets(text: str, index: int) -> Iterator[Tuple[int, str]]:
    """Position and character of each bracket outside strings, from ``index`` on."""
    length = len(text)
    while index < length:
        char = text[index]
        if char == '"':
            index = _string_end(text, index)
            continue
        if char in "[]{}":
            yield index, char
        index += 1


def _string_end(text: str, index: int) -> int:
    """The index just past the string that opens at ``index``."""
    index += 1
    length = len(text)
    while index < length:
        char = text[index]
        if char == "\\":
            index += 2
            continue
        index += 1
        if char == '"':
            break
    return index


def _container_end(text: str, index: int) -> int:
    """The index just past the array or object that opens at ``index``."""
    depth = 0
    for position, char in _brackets(text, index):
        depth += 1 if char in "[{" else -1
        if depth == 0:
            return position + 1
    return len(text)


def first_duplicate_key(value: Any) -> Optional[str]:
    """A key given twice in some object inside ``value`` (parsed by ``parse_message``)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            duplicates = getattr(item, "duplicate_keys", ())
            if duplicates:
                return duplicates[0]
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None
