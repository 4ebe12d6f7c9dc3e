"""RFC 8785 JSON Canonicalization Scheme (JCS) for job documents (pure: no I/O).

``canonicalize(value)`` gives the one byte string RFC 8785 defines for a JSON value parsed by
Python's ``json`` module: objects with their keys sorted by UTF-16 code units, no blanks,
strings escaped only where JSON requires it (``\\u00xx`` in lower case), UTF-8, and numbers
written as ECMAScript writes a double (``1.0`` -> ``1``, ``1e21`` -> ``1e+21``). Key order,
blanks, escapes and number spelling of the text the value came from therefore do not matter,
which is what a signature over a job document needs: the Jobs service stores a document and
sends it back re-serialized.

Values JCS cannot write exactly are refused with ``CanonicalizationError`` (a ValueError) that
names where in the value they are: integers beyond +-(2**53 - 1) (a JSON number is a double,
so they would change), NaN and infinities, strings holding lone surrogates, non-string keys
and any Python type JSON does not have. The tests hold this module to the ``rfc8785``
package, byte for byte, on generated values.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any, List

from agent.errors import AgentError

MAX_SAFE_INTEGER = 2**53 - 1

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
            "\t": "\\t"}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


class CanonicalizationError(AgentError, ValueError):
    """A value has no exact RFC 8785 form (a huge integer, NaN, a lone surrogate...)."""


def canonicalize(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of ``value``. Raises CanonicalizationError."""
    out: List[str] = []
    _write(value, out, "$")
    text = "".join(out)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        # Only a lone surrogate gets here: find where, for the message.
        where = _surrogate_path(value, "$") or "$"
        raise CanonicalizationError(
            f"{where}: a string holds a lone surrogate ({error.reason}); not valid Unicode"
        ) from None


def _write(value: Any, out: List[str], where: str) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalizationError(
                f"{where}: integer {value} is beyond +-(2**53 - 1), which a JSON number "
                f"(a double) cannot hold exactly"
            )
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(format_number(value, where))
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out, f"{where}[{index}]")
        out.append("]")
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise CanonicalizationError(f"{where}: object key {key!r} is not a string")
        out.append("{")
        for index, key in enumerate(sorted(value, key=_utf16_order)):
            if index:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _write(value[key], out, f"{where}.{key}")
        out.append("}")
    else:
        raise CanonicalizationError(f"{where}: {type(value).__name__} is not a JSON value")


def _utf16_order(key: str) -> bytes:
    # Big-endian UTF-16 bytes compare as the code units do (RFC 8785 section 3.2.3).
    return key.encode("utf-16-be", "surrogatepass")


def _string(text: str) -> str:
    return '"' + _NEEDS_ESCAPE.sub(_escape, text) + '"'


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    return _ESCAPES.get(char) or f"\\u{ord(char):04x}"


def format_number(number: float, where: str = "$") -> str:
    """``number`` as ECMAScript's Number::toString writes it (ECMA-262 7.1.12.1).

    Python's ``repr`` gives the shortest digits that read back as the same double, as
    ECMAScript requires; only the layout differs. Raises CanonicalizationError for NaN and
    the infinities, which JSON does not have.
    """
    if math.isnan(number) or math.isinf(number):
        raise CanonicalizationError(f"{where}: {number!r} is not a JSON number")
    if number == 0:
        return "0"  # -0 too
    sign = "-" if number < 0 else ""
    digits_tuple, exponent = Decimal(repr(abs(number))).as_tuple()[1:]
    digits = "".join(map(str, digits_tuple)).rstrip("0")
    exponent += len(digits_tuple) - len(digits)
    # number = 0.<digits> * 10**n, with k digits (the names of ECMA-262).
    k = len(digits)
    n = exponent + k
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        text = f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    return sign + text


def _surrogate_path(value: Any, where: str) -> str:
    """Where in ``value`` a string (or key) with a lone surrogate is; "" if nowhere."""
    if isinstance(value, str):
        return where if any("\ud800" <= char <= "\udfff" for char in value) else ""
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _surrogate_path(item, f"{where}[{index}]")
            if found:
                return found
    if isinstance(value, dict):
        for key, item in value.items():
            found = _surrogate_path(key, f"{where} (a key)") or _surrogate_path(
                item, f"{where}.{key}"
            )
            if found:
                return found
    return ""
