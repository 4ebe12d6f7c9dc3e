"""Signed job documents, at unit level: the canonical form against the ``rfc8785`` package,
signing and verifying with both key types, every way a document is refused, generated documents
and tamperings (every tampered document is refused), and reading trusted keys.

The end-to-end behaviour (real agent, local Jobs service, apt root) is in test_signing_e2e.py.
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import json
import os
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agent.errors import JobRejected
from agent.jcs import MAX_SAFE_INTEGER, CanonicalizationError, canonicalize
from agent.messages import parse_message
from agent.signing import (
    FIELD,
    DocumentGate,
    KeyFileError,
    TrustedKeys,
    key_id,
    load_private_key,
    load_trusted_keys,
    parse_expires,
    sign_document,
)

NOW = datetime.datetime(2026, 6, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
LATER = NOW + datetime.timedelta(days=1)
EARLIER = NOW - datetime.timedelta(seconds=1)
DOCUMENT = {"jobType": "APT_UPDATE", "aptPackageName": "cowsay", "note": "caf\u00e9 \u2713"}

KEY_TYPES = {
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
}
PRIVATE = {name: make() for name, make in KEY_TYPES.items()}
OTHER = {name: make() for name, make in KEY_TYPES.items()}  # never trusted
TRUSTED = TrustedKeys(
    Path("/etc/jobs-agent/trusted.pem"),
    {key_id(key.public_key()): key.public_key() for key in PRIVATE.values()},
)


def gate(required: bool = False, trusted=TRUSTED, now=NOW) -> DocumentGate:
    return DocumentGate(trusted, required, clock=lambda: now)


def rejection(document, job_id="job-1", **options) -> JobRejected:
    with pytest.raises(JobRejected) as caught:
        gate(**options)(job_id, document)
    return caught.value


def resent(document) -> dict:
    """``document`` as the Jobs service might send it back: keys reversed, blanks, ASCII
    escapes, read back as the agent reads a message."""

    def reverse(value):
        if isinstance(value, dict):
            return {key: reverse(value[key]) for key in reversed(list(value))}
        if isinstance(value, list):
            return [reverse(item) for item in value]
        return value

    text = json.dumps({"execution": {"jobDocument": reverse(document)}}, indent=3)
    return parse_message(text.encode())[0]["execution"]["jobDocument"]


# --- the canonical form ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, canonical",
    [
        # RFC 8785 appendix B and section 3.2.2.3
        (0.0, "0"),
        (-0.0, "0"),
        (1e30, "1e+30"),
        (4.50, "4.5"),
        (2e-3, "0.002"),
        (0.000000000000000000000000001, "1e-27"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (333333333.33333329, "333333333.3333333"),
        (5e-324, "5e-324"),
        (-1.7976931348623157e308, "-1.7976931348623157e+308"),
        (9007199254740991, "9007199254740991"),
        ({"b": [1, True, None], "a": "\u20ac\n\x1f\"\\"},
         '{"a":"\u20ac\\n\\u001f\\"\\\\","b":[1,true,null]}'),
        ({"\u20ac": 1, "\r": 2, "\U0001f600": 3, "\ufb33": 4, "1": 5},
         '{"\\r":2,"1":5,"\u20ac":1,"\U0001f600":3,"\ufb33":4}'),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_canonical_form_matches_rfc_8785_examples(value, canonical):
    assert canonicalize(value) == canonical.encode("utf-8") == rfc8785.dumps(value)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)
documents = st.dictionaries(
    st.text(max_size=10).filter(lambda key: key != FIELD), json_values, max_size=6
)


@given(json_values)
@settings(max_examples=200, deadline=None)
def test_canonical_form_is_byte_for_byte_the_rfc8785_packages(value):
    assert canonicalize(value) == rfc8785.dumps(value)


@given(json_values)
def test_canonical_form_ignores_key_order_blanks_and_number_spelling(value):
    reread = json.loads(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=True))
    assert canonicalize(reread) == canonicalize(value)


@pytest.mark.parametrize(
    "value, where",
    [
        ({"a": [1, 2**53]}, "$.a[1]: integer"),
        ({"a": -(2**60)}, "$.a: integer"),
        ({"x": float("nan")}, "$.x: nan"),
        ({"x": [float("inf")]}, "$.x[0]: inf"),
        ({"s": "\ud800"}, "$.s: a string holds a lone surrogate"),
        ({"s": {1: "a"}}, "$.s: object key 1"),
        ({"s": {1, 2}}, "$.s: set is not a JSON value"),
    ],
    ids=["big-int", "big-negative-int", "nan", "inf", "lone-surrogate", "int-key", "set"],
)
def test_values_without_an_exact_canonical_form_are_refused_naming_where(value, where):
    with pytest.raises(CanonicalizationError) as caught:
        canonicalize(value)
    assert str(caught.value).startswith(where), caught.value


# --- signing and verifying -------------------------------------------------------------------


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_signed_document_verifies_and_handlers_get_it_without_the_signature(key_type):
    signed = sign_document(DOCUMENT, PRIVATE[key_type], expires=LATER, job_id="job-1")

    assert list(signed)[: len(DOCUMENT)] == list(DOCUMENT)
    assert {k: v for k, v in signed.items() if k != FIELD} == DOCUMENT
    assert gate(required=True)("job-1", resent(signed)) == DOCUMENT


def test_signature_field_names_algorithm_key_expiry_and_job():
    signed = sign_document(DOCUMENT, PRIVATE["p256"], expires=LATER, job_id="job-1")
    field = signed[FIELD]

    assert field["algorithm"] == "ES256"
    assert field["keyId"] == key_id(PRIVATE["p256"].public_key())
    assert field["expires"] == "2026-06-02T12:00:00Z"
    assert field["jobId"] == "job-1"
    assert len(base64.b64decode(field["value"])) == 64


def test_unsigned_document_passes_unchanged_when_signatures_are_not_required():
    assert gate(required=False, trusted=None)("job-1", DOCUMENT) is DOCUMENT


def test_unsigned_document_is_rejected_when_signatures_are_required():
    error = rejection(DOCUMENT, required=True)
    assert error.code == "SIGNATURE_REQUIRED"
    assert "require_signed_documents" in error.reason


def test_signed_document_is_checked_even_when_signatures_are_not_required():
    signed = sign_document(DOCUMENT, PRIVATE["ed25519"])
    signed["aptPackageName"] = "netcat"
    assert rejection(signed, required=False).code == "SIGNATURE_INVALID"


def test_signed_document_without_trusted_keys_is_rejected_as_untrusted():
    signed = sign_document(DOCUMENT, PRIVATE["ed25519"])
    error = rejection(signed, trusted=None)
    assert error.code == "SIGNATURE_KEY_UNTRUSTED"
    assert "trusted_keys is not set" in error.reason


def signed_with(key_type="ed25519", **options):
    return sign_document(DOCUMENT, PRIVATE[key_type], **options)


def with_field(**changes):
    def change(document):
        for member, value in changes.items():
            if value is None:
                document[FIELD].pop(member, None)
            else:
                document[FIELD][member] = value

    return change


def set_field(value):
    def change(document):
        document[FIELD] = value

    return change


def flip_signature_bit(document):
    raw = bytearray(base64.b64decode(document[FIELD]["value"]))
    raw[5] ^= 0x01
    document[FIELD]["value"] = base64.b64encode(bytes(raw)).decode()


def sign_with_untrusted_key(document):
    document.clear()
    document.update(sign_document(DOCUMENT, OTHER["ed25519"]))


REJECTIONS = [
    # (id, key type, sign options, change after signing, job id, errorCode, words in the reason)
    ("changed-field", "ed25519", {}, lambda d: d.update(aptPackageName="netcat"), "job-1",
     "SIGNATURE_INVALID", "changed after signing"),
    ("added-field", "p256", {}, lambda d: d.update(aptPackageVersion="1.0"), "job-1",
     "SIGNATURE_INVALID", "changed after signing"),
    ("removed-field", "p256", {}, lambda d: d.pop("note"), "job-1",
     "SIGNATURE_INVALID", "changed after signing"),
    ("flipped-bit", "p256", {}, flip_signature_bit, "job-1",
     "SIGNATURE_INVALID", "does not verify"),
    ("expiry-removed", "ed25519", {"expires": LATER}, with_field(expires=None), "job-1",
     "SIGNATURE_INVALID", "does not verify"),
    ("expiry-extended", "ed25519", {"expires": EARLIER},
     with_field(expires="2099-01-01T00:00:00Z"), "job-1", "SIGNATURE_INVALID", "does not verify"),
    ("job-binding-removed", "p256", {"job_id": "job-1"}, with_field(jobId=None), "job-2",
     "SIGNATURE_INVALID", "does not verify"),
    ("algorithm-swapped", "ed25519", {}, with_field(algorithm="ES256"), "job-1",
     "SIGNATURE_INVALID", "is an Ed25519 key"),
    ("key-id-swapped", "ed25519", {}, with_field(keyId=key_id(PRIVATE["p256"].public_key()),
                                                algorithm="ES256"), "job-1",
     "SIGNATURE_INVALID", "does not verify"),
    ("untrusted-key", "ed25519", {}, sign_with_untrusted_key, "job-1",
     "SIGNATURE_KEY_UNTRUSTED", "not among the 2 trusted key(s)"),
    ("expired", "p256", {"expires": EARLIER}, lambda d: None, "job-1",
     "SIGNATURE_EXPIRED", "expired at 2026-06-01T11:59:59Z"),
    ("other-job", "ed25519", {"job_id": "job-1"}, lambda d: None, "job-2",
     "SIGNATURE_WRONG_JOB", "not to this job 'job-2'"),
    ("field-is-a-string", "ed25519", {}, set_field("abc"), "job-1",
     "SIGNATURE_MALFORMED", "expected an object, got str"),
    ("field-is-null", "ed25519", {}, set_field(None), "job-1",
     "SIGNATURE_MALFORMED", "expected an object, got NoneType"),
    ("value-not-base64", "ed25519", {}, with_field(value="not base64!"), "job-1",
     "SIGNATURE_MALFORMED", "not valid base64"),
    ("value-wrong-length", "ed25519", {}, with_field(value=base64.b64encode(b"x" * 10).decode()),
     "job-1", "SIGNATURE_MALFORMED", "holds 10 bytes"),
    ("value-a-number", "ed25519", {}, with_field(value=12), "job-1",
     "SIGNATURE_MALFORMED", "'value' must be a string"),
    ("unknown-algorithm", "ed25519", {}, with_field(algorithm="RS256"), "job-1",
     "SIGNATURE_MALFORMED", "unknown algorithm 'RS256'"),
    ("key-id-missing", "ed25519", {}, with_field(keyId=None), "job-1",
     "SIGNATURE_MALFORMED", "'keyId' is missing"),
    ("bad-expiry", "ed25519", {}, with_field(expires="tomorrow"), "job-1",
     "SIGNATURE_MALFORMED", "'expires' must be a UTC time"),
    ("impossible-expiry", "ed25519", {}, with_field(expires="2026-13-45T99:00:00Z"), "job-1",
     "SIGNATURE_MALFORMED", "'expires' must be a UTC time"),
    ("unknown-member", "ed25519", {}, with_field(comment="hi"), "job-1",
     "SIGNATURE_MALFORMED", "unknown member 'comment'"),
]


@pytest.mark.parametrize(
    "key_type, options, change, job_id, code, words",
    [case[1:] for case in REJECTIONS],
    ids=[case[0] for case in REJECTIONS],
)
def test_every_bad_signature_is_rejected_with_its_error_code(
    key_type, options, change, job_id, code, words
):
    document = signed_with(key_type, **options)
    change(document)
    error = rejection(resent(document), job_id=job_id)
    assert (error.code, words in error.reason) == (code, True), error.reason


def test_expiry_is_checked_against_the_device_clock():
    signed = signed_with(expires=NOW)
    assert rejection(signed, now=NOW).code == "SIGNATURE_EXPIRED"
    assert gate(now=EARLIER)("job-1", signed) == DOCUMENT


def test_a_resumed_job_is_not_refused_for_an_expiry_that_passed_after_it_started():
    signed = signed_with(expires=EARLIER, job_id="job-1")
    assert gate()("job-1", signed, resumed=True) == DOCUMENT
    assert rejection(signed).code == "SIGNATURE_EXPIRED"  # resumed=False: a first run


@pytest.mark.parametrize(
    "change, job_id, code",
    [
        (lambda d: d.update(aptPackageName="netcat"), "job-1", "SIGNATURE_INVALID"),
        (sign_with_untrusted_key, "job-1", "SIGNATURE_KEY_UNTRUSTED"),
        (lambda d: None, "job-2", "SIGNATURE_WRONG_JOB"),
    ],
    ids=["changed", "untrusted-key", "other-job"],
)
def test_a_resumed_job_still_has_its_signature_key_and_job_id_checked(change, job_id, code):
    document = signed_with(expires=EARLIER, job_id="job-1")
    change(document)
    with pytest.raises(JobRejected) as caught:
        gate()(job_id, document, resumed=True)
    assert caught.value.code == code


def test_document_that_cannot_be_canonicalized_is_rejected_as_invalid():
    signed = signed_with()
    signed["big"] = 2**64
    error = rejection(signed)
    assert error.code == "SIGNATURE_INVALID"
    assert "$.big: integer" in error.reason


def test_signing_refuses_documents_without_an_exact_canonical_form():
    with pytest.raises(CanonicalizationError):
        sign_document({"jobType": "X", "size": 2**64}, PRIVATE["ed25519"])


def test_signing_refuses_an_already_signed_document():
    with pytest.raises(ValueError, match="already has a documentSignature"):
        sign_document(signed_with(), PRIVATE["ed25519"])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-12-31T23:59:59Z", "2026-12-31T23:59:59+00:00"),
        ("2026-12-31T23:59Z", "2026-12-31T23:59:00+00:00"),
        ("2026-12-31T23:59:59.750+00:00", "2026-12-31T23:59:59+00:00"),
    ],
)
def test_expiry_accepts_iso_8601_utc_times(text, expected):
    assert parse_expires(text).isoformat() == expected


@pytest.mark.parametrize("text", ["2026-12-31T23:59:59", "2026-12-31T23:59:59+02:00", "soon"])
def test_expiry_refuses_times_that_are_not_explicitly_utc(text):
    with pytest.raises(ValueError):
        parse_expires(text)


# --- generated documents and tamperings ------------------------------------------------------


def leaf_paths(value, path=()):
    """Every path to a value inside ``value`` (containers included)."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaf_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaf_paths(item, (*path, index))


def replace_at(document, path, new):
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = new


@given(document=documents, key_type=st.sampled_from(sorted(KEY_TYPES)))
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_generated_documents_verify_after_reserialization(document, key_type):
    signed = sign_document(document, PRIVATE[key_type], expires=LATER, job_id="job-1")
    assert canonicalize(gate(required=True)("job-1", resent(signed))) == canonicalize(document)


@given(
    document=documents.filter(bool),
    key_type=st.sampled_from(sorted(KEY_TYPES)),
    data=st.data(),
)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_every_tampered_document_is_rejected(document, key_type, data):
    signed = sign_document(document, PRIVATE[key_type], expires=LATER, job_id="job-1")
    tampered = copy.deepcopy(signed)
    how = data.draw(
        st.sampled_from(
            ["replace-value", "add-field", "remove-field", "header", "signature", "reorder-list"]
        ),
        label="tampering",
    )
    if how == "replace-value":
        paths = [p for p in leaf_paths(document) if p]
        path = data.draw(st.sampled_from(paths), label="path")
        replace_at(tampered, path, data.draw(json_values, label="new value"))
    elif how == "add-field":
        key = data.draw(st.text(max_size=10).filter(lambda k: k not in signed), label="key")
        tampered[key] = data.draw(json_values, label="value")
    elif how == "remove-field":
        del tampered[data.draw(st.sampled_from(sorted(document)), label="removed")]
    elif how == "header":
        member, value = data.draw(
            st.sampled_from(
                [
                    ("expires", None),
                    ("expires", "2099-01-01T00:00:00Z"),
                    ("jobId", None),
                    ("jobId", "job-2"),
                ]
            ),
            label="header change",
        )
        with_field(**{member: value})(tampered)
    elif how == "signature":
        raw = bytearray(base64.b64decode(tampered[FIELD]["value"]))
        raw[data.draw(st.integers(0, 63), label="byte")] ^= 1 << data.draw(st.integers(0, 7))
        tampered[FIELD]["value"] = base64.b64encode(bytes(raw)).decode()
    else:
        lists = [p for p in leaf_paths(document) if p and isinstance(_at(document, p), list)]
        assume(lists)
        path = data.draw(st.sampled_from(lists), label="list")
        replace_at(tampered, path, list(reversed(_at(document, path))))
    without = {k: v for k, v in tampered.items() if k != FIELD}
    assume(canonicalize(without) != canonicalize(document) or tampered[FIELD] != signed[FIELD])

    with pytest.raises(JobRejected):
        gate(required=False)("job-1", resent(tampered))


GOOD_FIELD = signed_with(expires=LATER, job_id="job-1")[FIELD]
signature_members = st.sampled_from(["algorithm", "keyId", "expires", "jobId", "value", "x"])


@given(
    field=json_values
    | st.dictionaries(signature_members, json_values | st.text(max_size=90))
    | st.builds(
        lambda changes: {**GOOD_FIELD, **changes},
        st.dictionaries(signature_members, json_values | st.text(max_size=90), min_size=1),
    )
)
@settings(max_examples=300, deadline=None)
def test_any_other_signature_field_ends_in_a_rejection_never_another_error(field):
    assume(field != GOOD_FIELD)
    document = dict(DOCUMENT, **{FIELD: field})
    with pytest.raises(JobRejected):
        gate(required=True)("job-1", document)


def _at(value, path):
    for step in path:
        value = value[step]
    return value


# --- trusted keys ----------------------------------------------------------------------------


def public_pem(private) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(private) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def test_one_file_may_hold_several_trusted_keys(tmp_path):
    both = public_pem(PRIVATE["ed25519"]) + public_pem(PRIVATE["p256"])
    path = write(tmp_path / "trusted.pem", both)
    assert set(load_trusted_keys(path).keys) == set(TRUSTED.keys)


def test_a_folder_trusts_every_pem_file_in_it(tmp_path):
    write(tmp_path / "old.pem", public_pem(PRIVATE["ed25519"]))
    write(tmp_path / "new.pem", public_pem(PRIVATE["p256"]))
    write(tmp_path / "README", b"not a key")
    os.chmod(tmp_path, 0o755)
    assert set(load_trusted_keys(tmp_path).keys) == set(TRUSTED.keys)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: private_pem(PRIVATE["ed25519"]), "block 1 is a private key"),
        (lambda: public_pem(PRIVATE["p256"]) + private_pem(PRIVATE["p256"]),
         "block 2 is a private key"),
        (lambda: public_pem(rsa.generate_private_key(65537, 2048)), "RSAPublicKey; supported are"),
        (lambda: public_pem(ec.generate_private_key(ec.SECP384R1())), "curve secp384r1"),
        (lambda: b"hello\n", "holds no PEM block"),
        (lambda: b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a valid"),
    ],
    ids=["private-key", "private-after-public", "rsa", "p384", "not-pem", "broken-pem"],
)
def test_bad_trusted_key_files_are_refused_naming_the_file(tmp_path, make, words):
    path = write(tmp_path / "trusted.pem", make())
    with pytest.raises(KeyFileError) as caught:
        load_trusted_keys(path)
    assert str(caught.value).startswith(f"{path}: ") and words in str(caught.value), caught.value


def test_trusted_keys_writable_by_others_are_refused(tmp_path):
    path = write(tmp_path / "trusted.pem", public_pem(PRIVATE["ed25519"]), mode=0o666)
    with pytest.raises(KeyFileError, match="chmod go-w"):
        load_trusted_keys(path)


def test_a_folder_without_pem_files_is_refused(tmp_path):
    os.chmod(tmp_path, 0o755)
    with pytest.raises(KeyFileError, match="holds no \\*.pem file"):
        load_trusted_keys(tmp_path)


def test_key_id_is_the_sha256_of_the_der_public_key():
    der = PRIVATE["p256"].public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key_id(PRIVATE["p256"].public_key()) == hashlib.sha256(der).hexdigest()


def test_an_encrypted_private_key_is_read_with_its_password(tmp_path):
    path = write(tmp_path / "key.pem", PRIVATE["p256"].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ), mode=0o600)

    assert key_id(load_private_key(path, password=lambda: b"secret").public_key()) == key_id(
        PRIVATE["p256"].public_key()
    )
    with pytest.raises(KeyFileError, match="cannot decrypt the key"):
        load_private_key(path, password=lambda: b"wrong")
    with pytest.raises(KeyFileError, match="encrypted and no password was given"):
        load_private_key(path)
