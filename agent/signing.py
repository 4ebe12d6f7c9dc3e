"""Signed job documents: sign one (the operator's ``./sign-job-document``), verify one (the
agent's document gate), and read the trusted public keys.

A signed document is the operator's JSON object plus one top-level field::

    "documentSignature": {"algorithm": "Ed25519", "keyId": "<64 hex>",
                          "expires": "2026-12-31T23:59:59Z", "jobId": "job-1",
                          "value": "<base64>"}

``expires`` and ``jobId`` are optional. ``keyId`` is the SHA-256 of the public key's DER
SubjectPublicKeyInfo in hex (``openssl pkey -pubin -outform DER | sha256sum``). ``algorithm``
is ``Ed25519`` or ``ES256`` (ECDSA P-256 with SHA-256; ``value`` is then r || s, 64 bytes, as
in JOSE). The signature covers ``PAYLOAD_PREFIX`` followed by the RFC 8785 canonical form
(agent/jcs.py) of the whole document with ``documentSignature`` minus its ``value``: every
field, the key id, the expiry and the job id binding are signed, and key order, blanks and
number spelling are not (the Jobs service re-serializes documents).

Only the standard library and ``cryptography`` are used, and ``cryptography`` is imported only
when a key is read or a signature checked, so an agent that never sees one does not load it.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from agent.errors import AgentError, JobRejected, SettingsError
from agent.jcs import CanonicalizationError, canonicalize

log = logging.getLogger(__name__)

FIELD = "documentSignature"
PAYLOAD_PREFIX = b"aws-iot-jobs-agent signed job document v1\n"
ED25519 = "Ed25519"
ES256 = "ES256"
ALGORITHMS = (ED25519, ES256)
MEMBERS = ("algorithm", "keyId", "expires", "jobId", "value")
EXPIRES_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
JOB_ID_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_KEY_ID_PATTERN = re.compile(r"[0-9a-f]{64}")
_EXPIRES_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL
)
_SIGNATURE_BYTES = {ED25519: 64, ES256: 64}

# errorCode values of the REJECTED statuses, one per thing an operator has to do.
SIGNATURE_REQUIRED = "SIGNATURE_REQUIRED"
SIGNATURE_MALFORMED = "SIGNATURE_MALFORMED"
SIGNATURE_KEY_UNTRUSTED = "SIGNATURE_KEY_UNTRUSTED"
SIGNATURE_INVALID = "SIGNATURE_INVALID"
SIGNATURE_EXPIRED = "SIGNATURE_EXPIRED"
SIGNATURE_WRONG_JOB = "SIGNATURE_WRONG_JOB"


class KeyFileError(AgentError, ValueError):
    """A key file cannot be used: unreadable, not PEM, a private key where a public one
    belongs, or a key type other than Ed25519 and ECDSA P-256."""


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys a signature may be made with, by key id, and where they came from."""

    source: Path
    keys: Mapping[str, Any]

    def __len__(self) -> int:
        return len(self.keys)


def key_id(public_key: Any) -> str:
    """The key id of ``public_key``: SHA-256 of its DER SubjectPublicKeyInfo, in hex."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def algorithm_of(key: Any) -> Optional[str]:
    """``Ed25519`` or ``ES256`` for a supported public or private key, else None."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return ED25519
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        return ES256 if key.curve.name == "secp256r1" else None
    return None


def _describe_key(key: Any) -> str:
    curve = getattr(key, "curve", None)
    if curve is not None:
        return f"an ECDSA key on curve {curve.name}"
    return f"a {type(key).__name__.lstrip('_')}"


# --- reading keys --------------------------------------------------------------------------


def read_public_keys(path: Path) -> List[Any]:
    """The public keys in the PEM file ``path`` (one or more ``PUBLIC KEY`` blocks).

    Raises KeyFileError, naming the file, when it cannot be read, holds no PEM block, holds a
    private key, or holds a block that is not an Ed25519 or ECDSA P-256 public key.
    """
    from cryptography.hazmat.primitives import serialization

    try:
        data = path.read_bytes()
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read: {error.strerror}") from None
    blocks = _PEM_BLOCK.findall(data)
    if not blocks:
        raise KeyFileError(f"{path}: holds no PEM block (expected -----BEGIN PUBLIC KEY-----)")
    keys = []
    for number, (label, _) in enumerate(blocks, 1):
        name = label.decode("ascii")
        if "PRIVATE" in name:
            raise KeyFileError(
                f"{path}: block {number} is a private key ({name}); only public keys belong "
                f"on the device (openssl pkey -in PRIVATE.pem -pubout -out PUBLIC.pem)"
            )
        if name != "PUBLIC KEY":
            raise KeyFileError(f"{path}: block {number} is a {name}, expected a PUBLIC KEY")
    for number, match in enumerate(_PEM_BLOCK.finditer(data), 1):
        try:
            key = serialization.load_pem_public_key(match.group(0))
        except (ValueError, TypeError) as error:
            raise KeyFileError(
                f"{path}: block {number} is not a valid public key: {error}"
            ) from None
        if algorithm_of(key) is None:
            raise KeyFileError(
                f"{path}: block {number} is {_describe_key(key)}; supported are Ed25519 and "
                f"ECDSA P-256 (prime256v1) public keys"
            )
        keys.append(key)
    return keys


def load_trusted_keys(path: Path) -> TrustedKeys:
    """The public keys of ``path``: a PEM file, or a folder whose ``*.pem`` files are read.

    Raises KeyFileError (naming the file) for an unreadable or bad file, an empty folder, or a
    file or folder that group or others may write (anyone who can add a key there can sign).
    """
    path = Path(path)
    _check_not_writable_by_others(path)
    if path.is_dir():
        files = sorted(path.glob("*.pem"))
        if not files:
            raise KeyFileError(f"{path}: folder holds no *.pem file")
        for file in files:
            _check_not_writable_by_others(file)
    else:
        files = [path]
    keys: Dict[str, Any] = {}
    for file in files:
        for key in read_public_keys(file):
            keys.setdefault(key_id(key), key)
    return TrustedKeys(path, keys)


def _check_not_writable_by_others(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read: {error.strerror}") from None
    if mode & 0o022:
        raise KeyFileError(
            f"{path}: group or others may write it (mode {mode & 0o777:04o}), so anyone could "
            f"add a key; run: chmod go-w {path}"
        )


def trusted_keys_from_settings(settings: Any) -> Optional[TrustedKeys]:
    """The keys ``[security] trusted_keys`` names, or None when it is not set.

    Raises SettingsError naming the settings file, ``[security] trusted_keys`` and the key
    file; also when ``require_signed_documents`` is yes and no key is trusted.
    """
    security = settings.security
    where = f"{settings.path}: [security] trusted_keys"
    if security.trusted_keys is None:
        if security.require_signed_documents:
            raise SettingsError(
                f"{where}: missing; [security] require_signed_documents is yes, so at least "
                f"one public key must be trusted"
            )
        return None
    try:
        return load_trusted_keys(security.trusted_keys)
    except KeyFileError as error:
        raise SettingsError(f"{where}: {error}") from None


def load_private_key(path: Path, password: Optional[Callable[[], bytes]] = None) -> Any:
    """The Ed25519 or ECDSA P-256 private key in the PEM file ``path``.

    ``password`` is called for an encrypted key. Raises KeyFileError.
    """
    from cryptography.hazmat.primitives import serialization

    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read: {error.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, None)
    except TypeError:  # encrypted
        if password is None:
            raise KeyFileError(f"{path}: the key is encrypted and no password was given") from None
        try:
            key = serialization.load_pem_private_key(data, password())
        except (ValueError, TypeError) as error:
            raise KeyFileError(f"{path}: cannot decrypt the key: {error}") from None
    except ValueError as error:
        raise KeyFileError(f"{path}: not a usable PEM private key: {error}") from None
    if algorithm_of(key) is None:
        raise KeyFileError(
            f"{path}: is {_describe_key(key)}; supported are Ed25519 and ECDSA P-256 keys"
        )
    return key


# --- signing and verifying -----------------------------------------------------------------


def parse_expires(text: str) -> datetime.datetime:
    """An ISO 8601 UTC time (``2026-12-31T23:59:59Z``, ``...+00:00``; seconds optional).

    Raises ValueError for other text, or for a time that is not explicitly UTC.
    """
    cleaned = text.strip()
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        moment = datetime.datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(
            f"expected an ISO 8601 UTC time like 2026-12-31T23:59:59Z, got {text!r}"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() != datetime.timedelta(0):
        raise ValueError(f"expected a UTC time (ending in Z or +00:00), got {text!r}")
    return moment.replace(microsecond=0)


def format_expires(moment: datetime.datetime) -> str:
    """``moment`` (aware, UTC) as the signature field writes it: ``2026-12-31T23:59:59Z``."""
    return moment.astimezone(datetime.timezone.utc).strftime(EXPIRES_FORMAT)


def signed_bytes(document: Mapping[str, Any], header: Mapping[str, Any]) -> bytes:
    """What is signed: ``PAYLOAD_PREFIX`` + JCS of ``document`` with ``header`` (the signature
    field without ``value``) as its ``documentSignature``. Raises CanonicalizationError."""
    covered = {key: value for key, value in document.items() if key != FIELD}
    covered[FIELD] = dict(header)
    return PAYLOAD_PREFIX + canonicalize(covered)


def sign_document(
    document: Mapping[str, Any],
    private_key: Any,
    expires: Optional[datetime.datetime] = None,
    job_id: Optional[str] = None,
) -> Dict[str, Any]:
    """``document`` (fields and their order unchanged) plus its ``documentSignature``.

    Raises ValueError when the document is not a JSON object, already has a signature field,
    holds a value JCS cannot write exactly (CanonicalizationError), or ``job_id`` is not a
    valid job id; KeyFileError for an unsupported key.
    """
    if not isinstance(document, Mapping):
        raise ValueError(f"a job document is a JSON object, not {type(document).__name__}")
    if FIELD in document:
        raise ValueError(f"the document already has a {FIELD} field; remove it to sign again")
    algorithm = algorithm_of(private_key)
    if algorithm is None:
        raise KeyFileError(f"{_describe_key(private_key)} cannot sign; use Ed25519 or P-256")
    header: Dict[str, Any] = {"algorithm": algorithm, "keyId": key_id(private_key.public_key())}
    if expires is not None:
        header["expires"] = format_expires(expires)
    if job_id is not None:
        if not JOB_ID_PATTERN.fullmatch(job_id):
            raise ValueError(f"job id {job_id!r}: expected 1 to 64 of a-z A-Z 0-9 _ -")
        header["jobId"] = job_id
    payload = signed_bytes(document, header)
    if algorithm == ED25519:
        value = private_key.sign(payload)
    else:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        r, s = decode_dss_signature(private_key.sign(payload, ec.ECDSA(hashes.SHA256())))
        value = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    signed = dict(document)
    signed[FIELD] = dict(header, value=base64.b64encode(value).decode("ascii"))
    return signed


def _malformed(what: str) -> JobRejected:
    return JobRejected(f"{FIELD} is malformed: {what}", SIGNATURE_MALFORMED)


def _read_field(field: Any) -> Tuple[Dict[str, Any], bytes]:
    """The signature field's header (all but ``value``) and its signature bytes.

    Raises JobRejected (SIGNATURE_MALFORMED) naming the first thing wrong.
    """
    if not isinstance(field, dict):
        raise _malformed(f"expected an object, got {type(field).__name__}")
    unknown = sorted(set(field) - set(MEMBERS))
    if unknown:
        raise _malformed(f"unknown member {unknown[0][:64]!r} (known: {', '.join(MEMBERS)})")
    for member in ("algorithm", "keyId", "value"):
        if member not in field:
            raise _malformed(f"{member!r} is missing")
    for member in MEMBERS:
        if member in field and not isinstance(field[member], str):
            raise _malformed(f"{member!r} must be a string, got {type(field[member]).__name__}")
    algorithm = field["algorithm"]
    if algorithm not in ALGORITHMS:
        raise _malformed(
            f"unknown algorithm {algorithm[:64]!r} (supported: {', '.join(ALGORITHMS)})"
        )
    if not _KEY_ID_PATTERN.fullmatch(field["keyId"]):
        raise _malformed(f"'keyId' must be 64 lower-case hex digits, got {field['keyId'][:80]!r}")
    if "expires" in field and _expiry(field["expires"]) is None:
        raise _malformed(
            f"'expires' must be a UTC time like 2026-12-31T23:59:59Z, got "
            f"{field['expires'][:64]!r}"
        )
    if "jobId" in field and not JOB_ID_PATTERN.fullmatch(field["jobId"]):
        raise _malformed(f"'jobId' is not a valid job id: {field['jobId'][:80]!r}")
    try:
        value = base64.b64decode(field["value"].encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise _malformed("'value' is not valid base64") from None
    if len(value) != _SIGNATURE_BYTES[algorithm]:
        raise _malformed(
            f"'value' holds {len(value)} bytes; an {algorithm} signature has "
            f"{_SIGNATURE_BYTES[algorithm]}"
        )
    header = {member: field[member] for member in MEMBERS if member in field and member != "value"}
    return header, value


def _expiry(text: str) -> Optional[datetime.datetime]:
    """The time ``expires`` names (aware, UTC), or None when it is not one."""
    if not _EXPIRES_PATTERN.fullmatch(text):
        return None
    try:
        moment = datetime.datetime.strptime(text, EXPIRES_FORMAT)
    except ValueError:  # 2026-13-45T99:00:00Z
        return None
    return moment.replace(tzinfo=datetime.timezone.utc)


def _signature_verifies(key: Any, algorithm: str, value: bytes, payload: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        if algorithm == ED25519:
            key.verify(value, payload)
        else:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

            der = encode_dss_signature(
                int.from_bytes(value[:32], "big"), int.from_bytes(value[32:], "big")
            )
            key.verify(der, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def verify_document(
    document: Mapping[str, Any],
    job_id: str,
    trusted: Optional[TrustedKeys],
    now: datetime.datetime,
    check_expiry: bool = True,
) -> Dict[str, Any]:
    """``document`` without its ``documentSignature``, once that signature is shown good.

    Checks, in order: the field's form, that its key is trusted, the signature over the
    canonical document, the expiry against ``now`` (aware; skipped unless ``check_expiry``)
    and the job id binding. Raises
    JobRejected with errorCode SIGNATURE_MALFORMED, SIGNATURE_KEY_UNTRUSTED,
    SIGNATURE_INVALID, SIGNATURE_EXPIRED or SIGNATURE_WRONG_JOB, and a reason naming what to do.
    """
    header, value = _read_field(document[FIELD])
    algorithm, kid = header["algorithm"], header["keyId"]
    details = {"keyId": kid}
    if trusted is None:
        raise JobRejected(
            f"{FIELD} is made with key {kid}, but no key is trusted "
            f"([security] trusted_keys is not set)",
            SIGNATURE_KEY_UNTRUSTED,
            details,
        )
    key = trusted.keys.get(kid)
    if key is None:
        raise JobRejected(
            f"{FIELD} is made with key {kid}, which is not among the {len(trusted)} trusted "
            f"key(s) of [security] trusted_keys ({trusted.source})",
            SIGNATURE_KEY_UNTRUSTED,
            details,
        )
    if algorithm_of(key) != algorithm:
        raise JobRejected(
            f"{FIELD} says {algorithm}, but trusted key {kid} is an {algorithm_of(key)} key",
            SIGNATURE_INVALID,
            details,
        )
    try:
        payload = signed_bytes(document, header)
    except CanonicalizationError as error:
        raise JobRejected(
            f"the signed job document cannot be put in canonical form, so it was not made by "
            f"sign-job-document as sent: {error}",
            SIGNATURE_INVALID,
            details,
        ) from None
    if not _signature_verifies(key, algorithm, value, payload):
        raise JobRejected(
            f"{FIELD} does not verify with trusted key {kid}: the document or its signature "
            f"was changed after signing",
            SIGNATURE_INVALID,
            details,
        )
    expires = _expiry(header["expires"]) if "expires" in header else None
    if expires is not None and check_expiry:
        if now >= expires:
            raise JobRejected(
                f"{FIELD} expired at {header['expires']} (device clock: {format_expires(now)}); "
                f"sign the document again with a later --expires",
                SIGNATURE_EXPIRED,
                dict(details, expires=header["expires"]),
            )
    if "jobId" in header and header["jobId"] != job_id:
        raise JobRejected(
            f"{FIELD} binds the document to job {header['jobId']!r}, not to this job "
            f"{job_id!r}; sign it again with --job-id {job_id}",
            SIGNATURE_WRONG_JOB,
            dict(details, signedJobId=header["jobId"]),
        )
    return {key: item for key, item in document.items() if key != FIELD}


class DocumentGate:
    """JobClient's ``document_gate``: checks the signature of every signed document, and
    refuses unsigned ones when ``required``; hands handlers the document without it.

    A ``resumed`` job (one the journal shows a handler already ran, continued after an agent
    restart) passed this gate before it started, so its expiry is not checked again: a job
    that partly ran is not refused because its signature expired meanwhile. Its signature,
    key and job id binding still are.

    ``clock`` returns the current aware UTC time (injected by tests).
    """

    def __init__(
        self,
        trusted: Optional[TrustedKeys],
        required: bool,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(
            datetime.timezone.utc
        ),
    ) -> None:
        if required and not trusted:
            raise ValueError("signed documents cannot be required without a trusted key")
        self.trusted = trusted
        self.required = required
        self._clock = clock

    def __call__(
        self, job_id: str, document: Dict[str, Any], resumed: bool = False
    ) -> Dict[str, Any]:
        """The document handlers see. Raises JobRejected (see ``verify_document``)."""
        if FIELD not in document:
            if self.required:
                raise JobRejected(
                    f"job document is not signed (no {FIELD} field) and [security] "
                    f"require_signed_documents is yes; sign it with ./sign-job-document",
                    SIGNATURE_REQUIRED,
                )
            return document
        stripped = verify_document(
            document, job_id, self.trusted, self._clock(), check_expiry=not resumed
        )
        log.info("job %s: document signature verified (key %s)", job_id,
                 document[FIELD]["keyId"])
        return stripped


def document_gate_from_settings(settings: Any) -> DocumentGate:
    """The gate ``[security]`` asks for. Raises SettingsError (see trusted_keys_from_settings)."""
    trusted = trusted_keys_from_settings(settings)
    return DocumentGate(trusted, settings.security.require_signed_documents)
