"""Certificate validity dates are read without a crypto library and explained in words."""

import datetime

import pytest
from agent_core_fixtures import make_pem

from agent.tls import certificate_problem, certificate_validity, credential_problems

UTC = datetime.timezone.utc
NOW = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        (
            datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC),
            datetime.datetime(2049, 12, 31, tzinfo=UTC),
        ),
        (datetime.datetime(1999, 5, 6, tzinfo=UTC), datetime.datetime(2099, 1, 1, tzinfo=UTC)),
    ],
    ids=["utc_time", "generalized_time_after_2049"],
)
def test_validity_dates_are_read(not_before, not_after):
    assert certificate_validity(make_pem(not_before, not_after)) == (not_before, not_after)


def test_expired_certificate_is_named_as_expired(tmp_path):
    path = tmp_path / "thing.crt"
    path.write_bytes(make_pem(NOW - datetime.timedelta(days=30), NOW - datetime.timedelta(days=1)))
    assert (
        certificate_problem(path, NOW) == f"the certificate {path} expired on 2030-05-31 12:00 UTC"
    )


def test_certificate_from_the_future_asks_about_the_clock(tmp_path):
    path = tmp_path / "thing.crt"
    path.write_bytes(make_pem(NOW + datetime.timedelta(days=1), NOW + datetime.timedelta(days=30)))
    problem = certificate_problem(path, NOW)
    assert "is not valid before 2030-06-02 12:00 UTC" in problem
    assert "clock" in problem


def test_valid_certificate_has_no_problem(tmp_path):
    path = tmp_path / "thing.crt"
    path.write_bytes(make_pem(NOW - datetime.timedelta(days=1), NOW + datetime.timedelta(days=1)))
    assert certificate_problem(path, NOW) is None


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a certificate",
        b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n",
    ],
    ids=["empty", "text", "bad_base64", "truncated_der"],
)
def test_unreadable_certificate_gives_no_claim(tmp_path, content):
    path = tmp_path / "thing.crt"
    path.write_bytes(content)
    assert certificate_problem(path, NOW) is None
    with pytest.raises(ValueError):
        certificate_validity(content)


def test_missing_file_gives_no_claim(tmp_path):
    assert certificate_problem(tmp_path / "absent.crt", NOW) is None


# credential_problems: what the TLS stack would refuse, named by setting


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    """A self-signed certificate with its key, another key, and that key encrypted."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("credentials")
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "thing-1")])
    now = datetime.datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    plain = serialization.NoEncryption()
    files = {
        "cert": certificate.public_bytes(pem),
        "key": key.private_bytes(pem, serialization.PrivateFormat.PKCS8, plain),
        "other-key": other.private_bytes(pem, serialization.PrivateFormat.PKCS8, plain),
        "encrypted-key": key.private_bytes(
            pem,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        ),
        "garbage": b"not PEM at all\n",
    }
    for file_name, content in files.items():
        (folder / file_name).write_bytes(content)
    return folder


@pytest.mark.parametrize(
    ("root_ca", "certificate", "private_key", "expected"),
    [
        ("cert", "cert", "key", []),
        ("garbage", "cert", "key", [("root_ca", "is not a PEM certificate")]),
        ("cert", "garbage", "key", [("certificate", "is not a PEM certificate")]),
        ("cert", "key", "key", [("certificate", "holds a private key, not a certificate")]),
        ("cert", "cert", "cert", [("private_key", "holds a certificate, not a private key")]),
        ("cert", "cert", "garbage", [("private_key", "is not a PEM private key")]),
        ("cert", "cert", "other-key", [("private_key", "does not belong to the certificate")]),
        ("cert", "cert", "encrypted-key", [("private_key", "is protected by a passphrase")]),
        ("cert", "cert", "absent", [("private_key", "cannot read")]),
    ],
    ids=[
        "valid",
        "garbage-ca",
        "garbage-certificate",
        "key-as-certificate",
        "certificate-as-key",
        "garbage-key",
        "key-of-another-pair",
        "encrypted-key",
        "missing-key",
    ],
)
def test_credential_problems_name_the_setting_at_fault(
    credentials, root_ca, certificate, private_key, expected
):
    problems = credential_problems(
        credentials / root_ca, credentials / certificate, credentials / private_key
    )
    assert [key for key, _ in problems] == [key for key, _ in expected]
    for (_, reason), (_, wanted) in zip(problems, expected):
        assert wanted in reason
