"""Faults of the device's environment: the state directory's disk full (a real 64 KB tmpfs),
the thing's certificate expired or removed (clear error, retries with backoff, no crash loop
hammering the endpoint: connection attempts are counted at a FaultProxy), and the wall clock
jumping back and forth while a job runs (libfaketime; the agent's timers use the monotonic
clock).
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sysconfig
import time
from pathlib import Path
from typing import Optional

import pytest
from agent_core_fixtures import (
    InProcessAgent,
    Recorder,
    create_job,
    wait_for,
    wait_status,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from resilience_fixtures import through_proxy, wait_all_terminal
from stack_helpers import run_jobs_agent, set_settings

pytest_plugins = ("resilience_fixtures",)
pytestmark = pytest.mark.timeout(60)


def find_libfaketime() -> Optional[Path]:
    """libfaketime's preload library: Debian's package libfaketime puts it in the host's
    multiarch folder (/usr/lib/x86_64-linux-gnu, /usr/lib/aarch64-linux-gnu, ...)."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    folders = [Path("/usr/lib") / multiarch] if multiarch else []
    folders += [Path("/usr/lib"), Path("/usr/lib64")]
    for folder in folders:
        path = folder / "faketime" / "libfaketime.so.1"
        if path.exists():
            return path
    return None


LIBFAKETIME = find_libfaketime()


# disk full


@pytest.fixture
def tiny_state_dir(tmp_path):
    """A 64 KB tmpfs: a real file system that runs out of space."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> Path:
    """Write a ballast file until the file system is full; return it."""
    ballast = directory / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 1024)
    except OSError:
        pass
    finally:
        os.close(fd)
    return ballast


def test_disk_full_fails_the_job_it_cannot_record_and_recovers_when_freed(
    stack, agents, tiny_state_dir
):
    set_settings(stack.thing("thing-1").settings_path, "agent", state_dir=tiny_state_dir)
    recorder = Recorder()
    agent = InProcessAgent(stack).add("QUICK", recorder.quick)
    agents.append(agent)
    agent.start()
    ballast = fill(tiny_state_dir)
    create_job(stack, "full-1", {"jobType": "QUICK"})
    done = wait_status(stack, "full-1")
    assert done["status"] == "FAILED"
    assert done["details"]["errorCode"] == "JOURNAL_ERROR"
    assert "No space left on device" in done["details"]["reason"]
    assert recorder.runs("full-1") == 0  # never run what could not be recorded
    ballast.unlink()
    create_job(stack, "full-2", {"jobType": "QUICK"})
    wait_all_terminal(stack, {"full-1": "FAILED", "full-2": "SUCCEEDED"})
    assert recorder.runs("full-2") == 1


def test_an_agent_started_on_a_full_disk_exits_2_saying_why(stack, tiny_state_dir, processes):
    settings_path = stack.thing("thing-1").settings_path
    set_settings(settings_path, "agent", state_dir=tiny_state_dir)
    fill(tiny_state_dir)
    agent = processes(settings_path)
    assert agent.wait(20) == 2
    text = agent.log_text()
    assert "No space left on device" in text
    assert str(tiny_state_dir) in text


# certificates


def make_certificate(stack, folder: Path, *, expired: bool) -> tuple:
    """A key and a certificate for thing-1 signed by the stack's CA; expired yesterday or
    valid."""
    ca_cert = x509.load_pem_x509_certificate(stack.certificates.ca.certificate.read_bytes())
    ca_key = serialization.load_pem_private_key(
        stack.certificates.ca.private_key.read_bytes(), password=None
    )
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = (
        (now - datetime.timedelta(days=30), now - datetime.timedelta(days=1))
        if expired
        else (now - datetime.timedelta(days=1), now + datetime.timedelta(days=30))
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "thing-1")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = folder / "thing-1-expired.crt", folder / "thing-1-expired.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


# A refused TLS handshake costs the SDK its 10 s connect timeout, then the agent backs off
# 1, 2, 4... s: about 2 attempts in 12 s, where a crash loop would make dozens.
WINDOW_SECONDS = 11.0
MAX_ATTEMPTS_IN_WINDOW = 4


def test_an_expired_certificate_is_retried_with_backoff_without_a_crash_loop(
    stack, proxy, processes, tmp_path
):
    settings_path = through_proxy(stack, proxy)
    cert_path, key_path = make_certificate(stack, tmp_path, expired=True)
    set_settings(settings_path, "connection", certificate=cert_path, private_key=key_path)
    started = time.monotonic()
    agent = processes(settings_path)
    time.sleep(WINDOW_SECONDS)
    attempts = proxy.attempts_since(started)
    assert agent.process.poll() is None, "the agent exited"
    assert 1 <= attempts <= MAX_ATTEMPTS_IN_WINDOW, attempts
    text = agent.log_text()
    assert "cannot connect" in text and "retrying in" in text
    failures = [line for line in text.splitlines() if "cannot connect" in line]
    assert len(failures) == 1 and "expired" in failures[0]  # named once, then retried quietly
    assert "Traceback" not in text


def test_check_config_names_an_expired_certificate(stack, tmp_path):
    settings_path = stack.thing("thing-1").settings_path
    cert_path, key_path = make_certificate(stack, tmp_path, expired=True)
    set_settings(settings_path, "connection", certificate=cert_path, private_key=key_path)
    result = run_jobs_agent("-c", str(settings_path), "--check-config")
    assert result.returncode == 2
    assert f"{settings_path}: [connection] certificate:" in result.stderr
    assert "expired" in result.stderr


def test_a_certificate_removed_while_running_is_retried_without_hammering(
    stack, proxy, processes, tmp_path
):
    settings_path = through_proxy(stack, proxy)
    cert_path, key_path = make_certificate(stack, tmp_path, expired=False)
    set_settings(settings_path, "connection", certificate=cert_path, private_key=key_path)
    agent = processes(settings_path)
    agent.wait_log("listening for jobs")
    cert_path.unlink()
    started = time.monotonic()
    proxy.cut()  # the SDK reconnects by itself, and finds no certificate
    time.sleep(6.0)
    attempts = proxy.attempts_since(started)
    assert agent.process.poll() is None, "the agent exited"
    assert attempts <= MAX_ATTEMPTS_IN_WINDOW, attempts
    assert "Traceback" not in agent.log_text()


# clock jumps


@pytest.mark.skipif(LIBFAKETIME is None, reason="needs libfaketime (Debian: libfaketime)")
def test_wall_clock_jumps_during_a_job_change_nothing(stack, tmp_path):
    """The agent runs under libfaketime with a wall clock the test moves 2 days back, then 20
    days ahead, while a job runs with heartbeats every 0.3 s and a 1 s step timeout; the
    monotonic clock is left alone. The job and the next one succeed, each run once."""
    from agent_core_fixtures import AgentProcess

    settings_path = stack.thing("thing-1").settings_path
    set_settings(
        settings_path,
        "agent",
        step_timeout_minutes=1,
        heartbeat_seconds=0.3,
        progress_interval_seconds=0.2,
    )
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    environment = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(clock),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    old = dict(os.environ)
    os.environ.update(environment)
    try:
        agent = AgentProcess(settings_path, tmp_path / "agent.log", tmp_path / "runs")
    finally:
        os.environ.clear()
        os.environ.update(old)
    try:
        agent.wait_log("listening for jobs")
        create_job(stack, "clock-1", {"jobType": "SLEEP", "seconds": 3})
        wait_for(lambda: agent.runs(), 15, "the job to start")
        clock.write_text("-2d\n")
        time.sleep(1.0)
        clock.write_text("+20d\n")
        done = wait_status(stack, "clock-1", timeout=20)
        assert done["status"] == "SUCCEEDED", done
        create_job(stack, "clock-2", {"jobType": "SLEEP", "seconds": 0})
        wait_all_terminal(stack, {"clock-1": "SUCCEEDED", "clock-2": "SUCCEEDED"})
        assert agent.runs() == ["clock-1 1", "clock-2 1"]
    finally:
        agent.close()
