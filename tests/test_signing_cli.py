"""``./sign-job-document`` as an operator runs it: with the distribution's Python alone (no
virtual environment: the standard library and python3-cryptography), keys made by openssl,
the signed document on stdout and clear errors with exit status 2.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agent.signing import FIELD, DocumentGate, load_trusted_keys

REPO = Path(__file__).resolve().parent.parent
SIGN = REPO / "sign-job-document"
SYSTEM_PYTHON = "/usr/bin/python3"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli-keys")
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(folder / "ed.pem")],
                   check=True)
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                    "-out", str(folder / "ec.pem")], check=True)
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-out", str(folder / "rsa.pem")],
                   check=True)
    for name in ("ed", "ec"):
        subprocess.run(["openssl", "pkey", "-in", str(folder / f"{name}.pem"), "-pubout",
                        "-out", str(folder / f"{name}.pub.pem")], check=True)
    return folder


def sign(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    # -I: isolated (no user site, no PYTHON* variables); no virtual environment either
    return subprocess.run([SYSTEM_PYTHON, "-I", str(SIGN), *args], input=stdin,
                          capture_output=True, text=True, timeout=30, check=False)


def document_file(folder: Path, text: str) -> str:
    path = folder / "document.json"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("key", ["ed", "ec"], ids=["ed25519", "p256-sec1"])
def test_prints_the_document_unchanged_plus_the_signature(keys, tmp_path, key):
    text = '{"jobType": "APT_UPDATE", "aptPackageName": "cowsay", "size": 2.50}'

    result = sign("--key", str(keys / f"{key}.pem"), "--job-id", "job-7",
                  "--expires", "2099-01-01T00:00:00Z", document_file(tmp_path, text))

    assert result.returncode == 0, result.stderr
    signed = json.loads(result.stdout)
    assert list(signed) == ["jobType", "aptPackageName", "size", FIELD]
    assert {k: signed[k] for k in ("jobType", "aptPackageName", "size")} == json.loads(text)
    assert signed[FIELD]["jobId"] == "job-7"
    assert signed[FIELD]["expires"] == "2099-01-01T00:00:00Z"
    trusted = keys / f"{key}.pub.pem"
    assert DocumentGate(load_trusted_keys(trusted), True)("job-7", signed) == json.loads(text)


def test_reads_the_document_from_standard_input(keys):
    result = sign("--key", str(keys / "ed.pem"), "-", stdin='{"jobType": "X"}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["jobType"] == "X"


@pytest.mark.parametrize(
    "args, text, words",
    [
        (["--key", "{keys}/rsa.pem"], '{"a": 1}', "supported are Ed25519 and ECDSA P-256"),
        (["--key", "{keys}/ed.pub.pem"], '{"a": 1}', "not a usable PEM private key"),
        (["--key", "{keys}/absent.pem"], '{"a": 1}', "cannot read"),
        (["--key", "{keys}/ed.pem", "--expires", "2099-01-01"], '{"a": 1}', "a UTC time"),
        (["--key", "{keys}/ed.pem", "--job-id", "a b"], '{"a": 1}', "job id 'a b'"),
        (["--key", "{keys}/ed.pem"], '[1, 2]', "a JSON object, not list"),
        (["--key", "{keys}/ed.pem"], '{"a": 1, "a": 2}', "'a' is given more than once"),
        (["--key", "{keys}/ed.pem"], '{"a": 12345678901234567890}', "$.a: integer"),
        (["--key", "{keys}/ed.pem"], '{"a": NaN}', "$.a: nan"),
        (["--key", "{keys}/ed.pem"], '{"a": ', "not JSON"),
        (["--key", "{keys}/ed.pem"], '{"documentSignature": {}}', "already has a"),
    ],
    ids=["rsa-key", "public-key", "missing-key", "naive-expiry", "bad-job-id", "not-an-object",
         "duplicate-key", "huge-integer", "nan", "not-json", "already-signed"],
)
def test_bad_input_exits_2_with_a_clear_message(keys, tmp_path, args, text, words):
    result = sign(*[a.format(keys=keys) for a in args], document_file(tmp_path, text))
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_past_expiry_is_signed_with_a_warning(keys, tmp_path):
    result = sign("--key", str(keys / "ed.pem"), "--expires", "2020-01-01T00:00:00Z",
                  document_file(tmp_path, '{"a": 1}'))
    assert result.returncode == 0
    assert "already past" in result.stderr
