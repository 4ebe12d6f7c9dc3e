"""``[security]`` settings: ``jobs_agent.py --check-config`` (and a plain start) accept good
trusted keys and exit 2 for bad ones, naming the settings file and ``[security] <key>``.
The agent is run as a process, as systemd or start.sh runs it.
"""

from __future__ import annotations

import configparser
import os
import subprocess
from pathlib import Path
from typing import Callable, Dict

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from stack_helpers import run_jobs_agent

from agent.settings import SecuritySettings, load_settings
from local_jobs.certificates import ensure_certificates

pytestmark = pytest.mark.timeout(60)


def public_pem(private) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(private) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    ensure_certificates(folder, ["thing-1"])
    return folder


def settings_file(folder: Path, certificates: Path, security: Dict[str, str]) -> Path:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict(
        {
            "connection": {
                "endpoint": "localhost",
                "thing_name": "thing-1",
                "root_ca": str(certificates / "ca.crt"),
                "certificate": str(certificates / "things" / "thing-1.crt"),
                "private_key": str(certificates / "things" / "thing-1.key"),
            },
            "agent": {"state_dir": str(folder / "state")},
            "apt": {"allowed_packages": "cowsay"},
            "security": security,
        }
    )
    path = folder / "settings.conf"
    with open(path, "w") as stream:
        parser.write(stream)
    return path


def run_agent(path: Path, *args: str) -> subprocess.CompletedProcess:
    return run_jobs_agent("-c", str(path), *args)


def key_file(name: str, data: Callable[[], bytes], mode: int = 0o644):
    def make(folder: Path) -> str:
        path = folder / name
        path.write_bytes(data())
        os.chmod(path, mode)
        return str(path)

    return make


def key_folder(*files: Callable[[Path], str]):
    def make(folder: Path) -> str:
        made = folder / "trusted"
        made.mkdir(mode=0o755)
        for file in files:
            file(made)
        return str(made)

    return make


ED25519_PUBLIC = key_file("ed.pem", lambda: public_pem(ed25519.Ed25519PrivateKey.generate()))
P256_PUBLIC = key_file("p256.pem", lambda: public_pem(ec.generate_private_key(ec.SECP256R1())))


@pytest.mark.parametrize(
    "security",
    [
        {"require_signed_documents": "yes", "trusted_keys": ED25519_PUBLIC},
        {"require_signed_documents": "yes",
         "trusted_keys": key_folder(ED25519_PUBLIC, P256_PUBLIC)},
        {"require_signed_documents": "no"},
        {},
    ],
    ids=["one-key-file", "folder-of-two-keys", "not-required", "empty-section"],
)
def test_good_security_settings_pass_the_check(tmp_path, certificates, security):
    values = {k: v(tmp_path) if callable(v) else v for k, v in security.items()}
    result = run_agent(settings_file(tmp_path, certificates, values), "--check-config")
    assert result.returncode == 0, result.stderr


BAD = {
    "private-key": ("trusted_keys", key_file(
        "key.pem", lambda: private_pem(ed25519.Ed25519PrivateKey.generate())
    ), "is a private key"),
    "rsa-key": ("trusted_keys", key_file(
        "rsa.pem", lambda: public_pem(rsa.generate_private_key(65537, 2048))
    ), "supported are Ed25519 and ECDSA P-256"),
    "not-pem": ("trusted_keys", key_file("x.pem", lambda: b"hello\n"), "holds no PEM block"),
    "missing-file": ("trusted_keys", lambda folder: str(folder / "absent.pem"), "does not exist"),
    "empty-folder": ("trusted_keys", key_folder(), "holds no *.pem file"),
    "writable-by-others": ("trusted_keys", key_file(
        "open.pem", lambda: public_pem(ed25519.Ed25519PrivateKey.generate()), mode=0o666
    ), "chmod go-w"),
    "required-without-keys": (
        "require_signed_documents", "yes", "[security] trusted_keys: missing"
    ),
    "not-yes-or-no": ("require_signed_documents", "sometimes", "expected yes or no"),
    "unknown-key": ("trusted_key", "/etc/keys.pem", "unknown key"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_security_settings_fail_the_check_naming_the_key(tmp_path, certificates, case):
    key, value, words = BAD[case]
    value = value(tmp_path) if callable(value) else value
    path = settings_file(tmp_path, certificates, {key: value})

    result = run_agent(path, "--check-config")

    assert result.returncode == 2, result.stderr
    named = "trusted_keys" if case == "required-without-keys" else key
    assert f"{path}: [security] {named}:" in result.stderr, result.stderr
    assert words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_private_key_in_trusted_keys_stops_a_plain_start(tmp_path, certificates):
    value = BAD["private-key"][1](tmp_path)
    path = settings_file(tmp_path, certificates, {"trusted_keys": value})

    result = run_agent(path)

    assert result.returncode == 2, result.stderr
    assert f"{path}: [security] trusted_keys:" in result.stderr


def test_security_defaults_to_unsigned_documents_allowed(tmp_path, certificates):
    settings = load_settings(settings_file(tmp_path, certificates, {}))
    assert settings.security == SecuritySettings(require_signed_documents=False, trusted_keys=None)
