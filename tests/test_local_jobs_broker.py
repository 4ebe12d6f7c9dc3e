"""Mosquitto configured like AWS IoT Core: certificates, mutual TLS and the per-thing ACL."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from local_jobs_fixtures import RawDevice, create_job

from local_jobs.certificates import CertificateError, ensure_certificates

pytestmark = pytest.mark.timeout(60)


# certificates


def test_certificates_are_made_once_and_reused(tmp_path):
    first = ensure_certificates(tmp_path, ["thing-1"])
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    second = ensure_certificates(tmp_path, ["thing-1"])
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert before == after
    assert first == second
    assert second.thing_names() == ["thing-1"]


def test_private_keys_are_readable_by_the_owner_only(tmp_path):
    certs = ensure_certificates(tmp_path, ["thing-1"])
    for key in (certs.ca.private_key, certs.server.private_key, certs.service.private_key,
                certs.thing("thing-1").private_key):  # fmt: skip
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_server_certificate_is_valid_for_localhost_and_loopback(tmp_path):
    certs = ensure_certificates(tmp_path)
    cert = x509.load_pem_x509_certificate(certs.server.certificate.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_thing_certificate_names_the_thing_in_its_common_name(tmp_path):
    certs = ensure_certificates(tmp_path, ["my-thing:1"])
    cert = x509.load_pem_x509_certificate(certs.thing("my-thing:1").certificate.read_bytes())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "my-thing:1"


@pytest.mark.parametrize("name", ["", "a/b", "a+b", "#", "x" * 129, "local-jobs-service"])
def test_invalid_or_reserved_thing_names_are_refused(tmp_path, name):
    with pytest.raises(CertificateError):
        ensure_certificates(tmp_path, [name])


# mutual TLS


def _tls_handshake(stack, certfile=None, keyfile=None) -> bool:
    """True when the broker completes a TLS handshake (and answers) with this identity."""
    context = ssl.create_default_context(cafile=str(stack.ca_path))
    if certfile:
        context.load_cert_chain(certfile, keyfile)
    try:
        with socket.create_connection(("localhost", stack.mqtt_port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                # MQTT CONNECT, protocol 3.1.1, clean session, keepalive 5, client id "x".
                tls.sendall(bytes([0x10, 13, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 5, 0, 1]) + b"x")
                return tls.recv(4)[:1] == bytes([0x20])  # CONNACK
    except (ssl.SSLError, OSError):
        return False


def test_broker_accepts_a_thing_certificate(stack):
    creds = stack.thing("thing-1")
    assert _tls_handshake(stack, str(creds.certificate), str(creds.private_key))


def test_broker_refuses_a_client_without_certificate(stack):
    assert not _tls_handshake(stack)


def test_broker_refuses_a_certificate_from_another_authority(stack, tmp_path):
    other = ensure_certificates(tmp_path / "other", ["thing-1"])
    pair = other.thing("thing-1")
    assert not _tls_handshake(stack, str(pair.certificate), str(pair.private_key))


def test_the_openssl_command_verifies_every_certificate_against_the_ca(tmp_path):
    # The release tier runs this with each release's OpenSSL (1.1.1 on Debian 11, 3.x after).
    certs = ensure_certificates(tmp_path, ["thing-1"])
    for pair in (certs.server, certs.service, certs.thing("thing-1")):
        result = subprocess.run(
            ["openssl", "verify", "-CAfile", str(certs.ca.certificate), str(pair.certificate)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_ca_states_its_basic_constraints_once(tmp_path):
    certs = ensure_certificates(tmp_path)
    ca = x509.load_pem_x509_certificate(certs.ca.certificate.read_bytes())
    constraints = [e for e in ca.extensions if e.oid == x509.oid.ExtensionOID.BASIC_CONSTRAINTS]
    assert len(constraints) == 1
    assert constraints[0].critical and constraints[0].value.ca


# ACL: a thing is confined to its own topics


@pytest.fixture
def two_things(stack_factory):
    stack = stack_factory(things=["thing-1", "thing-2"])
    devices = []

    def device(thing, **kwargs):
        d = RawDevice(stack, thing, **kwargs)
        devices.append(d)
        return d

    yield stack, device
    for d in devices:
        d.close()


def _as_thing_1(stack):
    creds = stack.thing("thing-1")
    return (str(creds.certificate), str(creds.private_key))


def test_thing_cannot_read_another_things_jobs_topics(two_things):
    stack, device = two_things
    spy = device("thing-2", identity=_as_thing_1(stack))
    owner = device("thing-2")
    create_job(stack, "job-2", things=["thing-2"])
    owner.wait_topic("notify-next")
    assert spy.drain(0.5) == []


def test_thing_cannot_publish_requests_for_another_thing(two_things):
    stack, device = two_things
    owner = device("thing-2")
    create_job(stack, "job-2", things=["thing-2"])
    owner.wait_topic("notify-next")
    owner.drain()
    impostor = device("thing-2", identity=_as_thing_1(stack), subscribe=[])
    impostor.publish("start-next", {"clientToken": "fake"})
    impostor.publish("job-2/update", {"status": "SUCCEEDED"})
    assert owner.drain(0.5) == []
    execution = stack.iot_client().describe_job_execution(jobId="job-2", thingName="thing-2")
    assert execution["execution"]["status"] == "QUEUED"


def test_thing_cannot_publish_fake_service_replies_or_notifications(two_things):
    stack, device = two_things
    listener = device("thing-1")
    faker = device("thing-1", subscribe=[])
    for suffix in ("notify-next", "notify", "get/accepted", "job-1/update/rejected"):
        faker.publish(suffix, {"timestamp": 1})
    assert listener.drain(0.5) == []


def test_thing_wildcard_subscription_sees_only_its_own_jobs(two_things):
    stack, device = two_things
    spy = device("thing-1", subscribe=["$aws/things/+/jobs/#"])
    owner = device("thing-2")
    create_job(stack, "job-2", things=["thing-2"])
    owner.wait_topic("notify-next")
    create_job(stack, "job-1", things=["thing-1"])
    received = [topic for topic, _ in spy.drain(0.5)]
    assert received and all(t in ("notify", "notify-next") for t in received)
