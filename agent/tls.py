"""Say in words why a device certificate cannot work: expired, or not valid yet (pure reading).

A broker refuses an expired client certificate during or after the TLS handshake, and the
SDK then reports only a timeout or a closed connection. Reading the certificate's validity
dates lets the agent name the real cause. The dates are read from the DER encoding directly
(Certificate > TBSCertificate > Validity), so the agent needs no crypto library for it.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from pathlib import Path
from typing import Optional, Tuple

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18
_CONTEXT_0 = 0xA0

Validity = Tuple[datetime.datetime, datetime.datetime]


def _element(der: bytes, index: int) -> Tuple[int, int, int]:
    """Tag, content start and content end of the DER element at ``index``."""
    tag = der[index]
    length = der[index + 1]
    index += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[index : index + count], "big")
        index += count
    end = index + length
    if end > len(der):
        raise ValueError("DER element runs past the end")
    return tag, index, end


def _time(der: bytes, index: int) -> Tuple[datetime.datetime, int]:
    tag, start, end = _element(der, index)
    text = der[start:end].decode("ascii")
    if tag == _UTC_TIME:  # YYMMDDHHMMSSZ; RFC 5280: 50-99 are 19xx
        value = datetime.datetime.strptime(text, "%y%m%d%H%M%SZ")
        if value.year >= 2050:
            value = value.replace(year=value.year - 100)
    elif tag == _GENERALIZED_TIME:
        value = datetime.datetime.strptime(text, "%Y%m%d%H%M%SZ")
    else:
        raise ValueError(f"unexpected time tag {tag:#x}")
    return value.replace(tzinfo=datetime.timezone.utc), end


def certificate_validity(pem: bytes) -> Validity:
    """(notBefore, notAfter) of the first certificate in ``pem``. Raises ValueError."""
    match = _PEM.search(pem)
    if match is None:
        raise ValueError("no PEM certificate")
    try:
        der = base64.b64decode(b"".join(match.group(1).split()), validate=True)
        _, start, _ = _element(der, 0)  # Certificate
        _, index, _ = _element(der, start)  # TBSCertificate
        tag, _, end = _element(der, index)
        if tag == _CONTEXT_0:  # [0] version
            index = end
        for _ in range(3):  # serialNumber, signature, issuer
            _, _, index = _element(der, index)
        _, index, _ = _element(der, index)  # Validity
        not_before, index = _time(der, index)
        not_after, _ = _time(der, index)
    except (IndexError, UnicodeDecodeError, binascii.Error) as error:
        raise ValueError(f"malformed certificate: {error}") from None
    return not_before, not_after


def certificate_problem(path: Path, now: Optional[datetime.datetime] = None) -> Optional[str]:
    """Why the certificate at ``path`` is not valid ``now`` (expired, not yet valid), or None
    when it is, or when its dates cannot be read."""
    try:
        not_before, not_after = certificate_validity(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if now > not_after:
        return f"the certificate {path} expired on {not_after:%Y-%m-%d %H:%M} UTC"
    if now < not_before:
        return (
            f"the certificate {path} is not valid before {not_before:%Y-%m-%d %H:%M} UTC "
            f"(is this device's clock right? it says {now:%Y-%m-%d %H:%M} UTC)"
        )
    return None
