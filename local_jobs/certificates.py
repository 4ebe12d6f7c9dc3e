"""Certificates for the local broker: a CA, the server, the Jobs service and one per thing.

Made once with the ``cryptography`` library (the distribution's python3-cryptography, on
every supported release) into a folder the caller names and reused when present. Keys are EC
P-256 (fast to make, accepted by OpenSSL, Mosquitto and the AWS SDKs); private keys are written
with mode 0600.

Layout of the folder::

    ca.crt  ca.key                     the certificate authority every party trusts
    server.crt  server.key             the broker (SAN DNS:localhost, IP:127.0.0.1)
    local-jobs-service.crt / .key      the privileged identity of the Jobs service
    things/<thing>.crt / .key          one identity per thing, CN = thing name
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

from local_jobs.model import THING_NAME_PATTERN

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:  # ensure_certificates says what to install
    x509 = None

log = logging.getLogger(__name__)

SERVICE_IDENTITY = "local-jobs-service"
CA_COMMON_NAME = "Local AWS IoT Jobs test CA"
VALID_DAYS = 3650

# Making the same folder from two threads at once would write half files; one lock suffices.
_folder_lock = threading.Lock()


class CertificateError(Exception):
    """A certificate cannot be made or a name cannot be a certificate identity."""


@dataclass(frozen=True)
class KeyPair:
    """Paths of a certificate and its private key."""

    certificate: Path
    private_key: Path


@dataclass(frozen=True)
class CertificateSet:
    """Paths of everything ``ensure_certificates`` made."""

    folder: Path
    ca: KeyPair
    server: KeyPair
    service: KeyPair

    def thing(self, thing_name: str) -> KeyPair:
        """Where the thing's pair lives (made or not)."""
        return _thing_pair(self.folder, thing_name)

    def thing_names(self) -> List[str]:
        """Names of the things whose certificates exist, sorted."""
        things = self.folder / "things"
        if not things.is_dir():
            return []
        return sorted(p.stem for p in things.glob("*.crt") if (things / (p.stem + ".key")).exists())


def _thing_pair(folder: Path, thing_name: str) -> KeyPair:
    return KeyPair(folder / "things" / f"{thing_name}.crt", folder / "things" / f"{thing_name}.key")


def check_thing_name(thing_name: str) -> str:
    """Return ``thing_name`` when it is a valid AWS IoT thing name; raise CertificateError."""
    if not isinstance(thing_name, str) or not THING_NAME_PATTERN.fullmatch(thing_name):
        raise CertificateError(
            f"invalid thing name {thing_name!r}: expected 1-128 characters of [a-zA-Z0-9:_-]"
        )
    if thing_name == SERVICE_IDENTITY:
        raise CertificateError(f"thing name {thing_name!r} is reserved for the Jobs service")
    return thing_name


def ensure_certificates(folder: os.PathLike, things: Sequence[str] = ()) -> CertificateSet:
    """Make whatever of the CA, server, service and thing certificates is missing in ``folder``.

    Existing files are reused unchanged. Raises CertificateError for an invalid thing name, or
    when a certificate must be made and the ``cryptography`` library is not installed.
    """
    for name in things:
        check_thing_name(name)
    root = Path(folder)
    with _folder_lock:
        root.mkdir(parents=True, exist_ok=True)
        (root / "things").mkdir(exist_ok=True)
        ca = KeyPair(root / "ca.crt", root / "ca.key")
        if not _exists(ca):
            _make_ca(ca)
            log.info("made certificate authority %s", ca.certificate)
        server = KeyPair(root / "server.crt", root / "server.key")
        if not _exists(server):
            _make_leaf(server, "localhost", ca, server=True)
        service = KeyPair(root / f"{SERVICE_IDENTITY}.crt", root / f"{SERVICE_IDENTITY}.key")
        if not _exists(service):
            _make_leaf(service, SERVICE_IDENTITY, ca, server=False)
        for name in things:
            pair = _thing_pair(root, name)
            if not _exists(pair):
                _make_leaf(pair, name, ca, server=False)
                log.info("made certificate for thing %s in %s", name, pair.certificate)
    return CertificateSet(root, ca, server, service)


def _exists(pair: KeyPair) -> bool:
    return pair.certificate.exists() and pair.private_key.exists()


def _require_cryptography() -> None:
    if x509 is None:
        raise CertificateError(
            "the cryptography library is not installed: apt-get install python3-cryptography"
        )


def _new_key():
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write_cert(path: Path, cert) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, path)


def _load_pair(pair: KeyPair):
    cert = x509.load_pem_x509_certificate(pair.certificate.read_bytes())
    key = serialization.load_pem_private_key(pair.private_key.read_bytes(), password=None)
    return cert, key


def _validity():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(days=1), now + datetime.timedelta(days=VALID_DAYS)


def _make_ca(pair: KeyPair) -> None:
    _require_cryptography()
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    not_before, not_after = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(pair.private_key, key)
    _write_cert(pair.certificate, cert)


def _make_leaf(pair: KeyPair, common_name: str, ca: KeyPair, *, server: bool) -> None:
    _require_cryptography()
    ca_cert, ca_key = _load_pair(ca)
    key = _new_key()
    not_before, not_after = _validity()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        names = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(pair.private_key, key)
    _write_cert(pair.certificate, cert)
