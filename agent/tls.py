"""Say in words why the device's TLS files cannot work, before the TLS stack says it in jargon.

``credential_problems`` loads the files with the standard library's ``ssl``, as the
connection will: the CA and the certificate must parse, the private key must parse and belong
to the certificate (``SSLContext.load_cert_chain`` refuses a mismatch). Each problem names
the setting at fault (``root_ca``, ``certificate`` or ``private_key``) and says what to do.

A broker refuses an expired client certificate during or after the TLS handshake, and the
SDK then reports only a timeout or a closed connection. Reading the certificate's validity
dates (``certificate_problem``) lets the agent name the real cause. The dates are read from
the DER encoding directly (Certificate > TBSCertificate > Validity), so the agent needs no
crypto library for it.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
import ssl
from pathlib import Path
from typing import List, Optional, Tuple

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


class _Encrypted(Exception):
    """The private key asked for a passphrase."""


def _ask_no_passphrase() -> bytes:
    raise _Encrypted


def _read_head(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()[:65536]
    except OSError:
        return b""


def _certificate_file_problem(path: Path) -> Optional[str]:
    """Why no certificate can be read from the PEM file at ``path``, or None."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
    except ssl.SSLError as error:
        content = _read_head(path)
        if b"PRIVATE KEY-----" in content and b"BEGIN CERTIFICATE" not in content:
            return (
                f"{str(path)!r} holds a private key, not a certificate "
                f"(are certificate and private_key swapped?)"
            )
        if b"-----BEGIN CERTIFICATE-----" not in content:
            return f"{str(path)!r} is not a PEM certificate (no -----BEGIN CERTIFICATE----- line)"
        return f"{str(path)!r}: the certificate in it cannot be read ({error.reason or error})"
    except OSError as error:
        return f"cannot read {str(path)!r}: {error.strerror or error}"
    return None


def _private_key_problem(certificate: Path, private_key: Path) -> Optional[str]:
    """Why ``private_key`` cannot be used with the (readable) ``certificate``, or None."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(
            str(certificate), str(private_key), password=_ask_no_passphrase
        )
    except _Encrypted:
        return (
            f"{str(private_key)!r} is protected by a passphrase, which the agent cannot give; "
            f"store it unencrypted (chmod 600): openssl pkey -in KEY -out KEY.plain"
        )
    except OSError as error:
        if not isinstance(error, ssl.SSLError):
            return f"cannot read {str(private_key)!r}: {error.strerror or error}"
        if error.reason == "KEY_VALUES_MISMATCH":
            return (
                f"{str(private_key)!r} does not belong to the certificate {str(certificate)!r} "
                f"(a key from another key pair); use the key made with that certificate"
            )
        content = _read_head(private_key)
        if b"BEGIN CERTIFICATE" in content and b"PRIVATE KEY-----" not in content:
            return (
                f"{str(private_key)!r} holds a certificate, not a private key "
                f"(are certificate and private_key swapped?)"
            )
        if b"PRIVATE KEY-----" not in content:
            return f"{str(private_key)!r} is not a PEM private key (no BEGIN ... PRIVATE KEY line)"
        return f"{str(private_key)!r}: its private key cannot be read ({error.reason or error})"
    return None


def credential_problems(
    root_ca: Path, certificate: Path, private_key: Path
) -> List[Tuple[str, str]]:
    """What the TLS stack will refuse in these files, as (setting, reason) pairs.

    The setting is ``root_ca``, ``certificate`` or ``private_key``. An empty list means the CA
    and the certificate parse, and the private key parses and belongs to the certificate.
    Never raises.
    """
    problems = []
    ca = _certificate_file_problem(root_ca)
    if ca:
        problems.append(("root_ca", ca))
    device = _certificate_file_problem(certificate)
    if device:
        problems.append(("certificate", device))
    else:
        key = _private_key_problem(certificate, private_key)
        if key:
            problems.append(("private_key", key))
    return problems
