"""Signed job documents end to end: key pairs made with openssl, documents signed with
``./sign-job-document``, re-serialized (key order, blanks, escapes) before CreateJob, which
stores and re-serializes them again; the real agent (jobs_agent.py) over the real broker and the
local Jobs service runs them into a throwaway apt root, or REJECTS them before any apt worker
starts.

thing-1 requires signatures and trusts a folder of two keys, one of each type (a rotation in
progress); thing-2 trusts the same keys but does not require signatures.
"""

from __future__ import annotations

import datetime
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import pytest
from agent_core_fixtures import (
    AgentProcess,
    create_job,
    running_jobs_agent,
    wait_for,
    wait_status,
)
from stack_helpers import set_settings

from local_jobs.stack import LocalStack

pytest_plugins = ("apt_fixtures",)
pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parent.parent
SIGN = REPO / "sign-job-document"
KEY_TYPES = ("ed25519", "p256")
_numbers = itertools.count(1)


def openssl_key_pair(folder: Path, name: str, key_type: str) -> Path:
    """A private key made as docs/signing.md says; its public key as ``<name>.pub.pem``."""
    private = folder / f"{name}.pem"
    algorithm = (
        ["-algorithm", "ed25519"]
        if key_type == "ed25519"
        else ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    )
    subprocess.run(["openssl", "genpkey", *algorithm, "-out", str(private)], check=True)
    public = folder / f"{name}.pub.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", str(private), "-pubout", "-out", str(public)], check=True
    )
    return private


def sign(document: Dict[str, Any], key: Path, folder: Path, *options: str) -> Dict[str, Any]:
    """``./sign-job-document --key key [options] document.json``, its output parsed."""
    path = folder / f"document-{next(_numbers)}.json"
    path.write_text(json.dumps(document))
    result = subprocess.run(
        [sys.executable, str(SIGN), "--key", str(key), *options, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def reserialized(document: Dict[str, Any]) -> str:
    """Other JSON text for the same value: keys in reverse order, no blanks, ASCII escapes,
    numbers spelled otherwise (2.5 as 25E-1, 3 as 3.0)."""

    def reverse(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: reverse(value[key]) for key in reversed(list(value))}
        return value

    text = json.dumps(reverse(document), separators=(",", ":"), ensure_ascii=True)
    return text.replace('"weight":2.5', '"weight":25E-1').replace('"count":3', '"count":3.0')


class Device:
    def __init__(self, stack: LocalStack, thing: str, log: Path, root) -> None:
        self.stack = stack
        self.thing = thing
        self.log = log
        self.root = root

    def run(self, job_id: str, document_text: str) -> Dict[str, Any]:
        self.stack.iot_client().create_job(
            jobId=job_id, targets=[self.stack.thing(self.thing).arn], document=document_text
        )
        return wait_status(
            self.stack, job_id, ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60, thing=self.thing
        )

    def started_an_apt_worker(self, job_id: str) -> bool:
        lines = self.log.read_text(errors="replace").splitlines()
        return any(f"job {job_id}:" in line and "apt worker" in line for line in lines)


class Keys:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.trusted_folder = folder / "trusted"
        self.trusted_folder.mkdir(mode=0o755)
        self.private: Dict[str, Path] = {}
        self.untrusted: Dict[str, Path] = {}
        for key_type in KEY_TYPES:
            self.private[key_type] = openssl_key_pair(folder, f"operator-{key_type}", key_type)
            public = folder / f"operator-{key_type}.pub.pem"
            (self.trusted_folder / public.name).write_bytes(public.read_bytes())
            self.untrusted[key_type] = openssl_key_pair(folder, f"stranger-{key_type}", key_type)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    return Keys(tmp_path_factory.mktemp("signing-keys"))


@pytest.fixture(scope="module")
def devices(tmp_path_factory, apt_template, keys):
    folder = tmp_path_factory.mktemp("signing-e2e")
    stack = LocalStack(folder / "stack", things=["thing-1", "thing-2"]).start()
    security = {
        "thing-1": {"require_signed_documents": "yes", "trusted_keys": str(keys.trusted_folder)},
        "thing-2": {"require_signed_documents": "no", "trusted_keys": str(keys.trusted_folder)},
    }
    made: Dict[str, Device] = {}
    try:
        with running_agent(stack, "thing-1", folder, apt_template, security) as one, \
                running_agent(stack, "thing-2", folder, apt_template, security) as two:
            made["thing-1"], made["thing-2"] = one, two
            yield made
    finally:
        stack.stop()


class running_agent:
    """The agent for ``thing`` with its own apt root and ``[security]``, until left."""

    def __init__(self, stack, thing, folder: Path, apt_template, security) -> None:
        self.root = apt_template.copy_to(folder / f"{thing}-root")
        settings_path = stack.thing(thing).settings_path
        set_settings(
            settings_path, "apt", root_dir=self.root.path, allowed_packages="alpha beta epsilon"
        )
        set_settings(settings_path, "security", **security[thing])
        self.log = folder / f"{thing}-agent.log"
        self.device = Device(stack, thing, self.log, self.root)
        self._running = running_jobs_agent(settings_path, self.log)

    def __enter__(self) -> Device:
        self._running.__enter__()
        wait_for(lambda: "listening for jobs" in self.log.read_text(errors="replace"), 20,
                 "the agent to connect")
        return self.device

    def __exit__(self, *exc_info: Any) -> Optional[bool]:
        return self._running.__exit__(*exc_info)


def in_a_day() -> str:
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    return later.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    "key_type, package", [("ed25519", "epsilon"), ("p256", "beta")], ids=KEY_TYPES
)
def test_signed_reserialized_document_installs_the_package(devices, keys, tmp_path, key_type,
                                                           package):
    device = devices["thing-1"]
    job_id = f"signed-{key_type}"
    document = {"jobType": "APT_UPDATE", "aptPackageName": package, "note": "d\u00e9j\u00e0",
                "weight": 2.5, "count": 3}
    signed = sign(document, keys.private[key_type], tmp_path, "--job-id", job_id,
                  "--expires", in_a_day())
    text = reserialized(signed)
    assert "25E-1" in text and "3.0" in text and "\\u00e9" in text

    found = device.run(job_id, text)

    assert found["status"] == "SUCCEEDED", found
    assert device.root.installed_version(package) == "1.0"


def change_package(document):
    document["aptPackageName"] = "beta"


def set_signature(value):
    def change(document):
        document["documentSignature"] = value

    return change


def set_member(member, value):
    def change(document):
        document["documentSignature"][member] = value

    return change


REJECTED_CASES = {
    # name: (sign options, change after signing, job id suffix, errorCode)
    "changed-field": ([], change_package, "", "SIGNATURE_INVALID"),
    "expired": (["--expires", "2020-01-01T00:00:00Z"], None, "", "SIGNATURE_EXPIRED"),
    "other-job": (["--job-id", "some-other-job"], None, "", "SIGNATURE_WRONG_JOB"),
    "untrusted-key": ([], None, "", "SIGNATURE_KEY_UNTRUSTED"),
    "field-wrong-type": ([], set_signature(["Ed25519"]), "", "SIGNATURE_MALFORMED"),
    "bad-base64": ([], set_member("value", "%%%not-base64%%%"), "", "SIGNATURE_MALFORMED"),
    "unknown-algorithm": ([], set_member("algorithm", "HS256"), "", "SIGNATURE_MALFORMED"),
}


@pytest.mark.parametrize("key_type", KEY_TYPES)
@pytest.mark.parametrize("case", sorted(REJECTED_CASES))
def test_bad_signature_is_rejected_before_any_apt_worker(devices, keys, tmp_path, case,
                                                         key_type):
    device = devices["thing-1"]
    options, change, _, code = REJECTED_CASES[case]
    key = keys.untrusted[key_type] if case == "untrusted-key" else keys.private[key_type]
    signed = sign({"jobType": "APT_UPDATE", "aptPackageName": "alpha"}, key, tmp_path, *options)
    if change is not None:
        change(signed)
    job_id = f"rejected-{case}-{key_type}"

    found = device.run(job_id, reserialized(signed))

    assert (found["status"], found["details"].get("errorCode")) == ("REJECTED", code), found
    assert found["details"]["reason"]
    assert not device.started_an_apt_worker(job_id)
    assert device.root.installed_version("alpha") is None


def test_unsigned_document_is_rejected_when_signatures_are_required(devices):
    device = devices["thing-1"]

    found = device.run("unsigned-required", json.dumps({"jobType": "APT_UPDATE",
                                                        "aptPackageName": "alpha"}))

    assert (found["status"], found["details"]["errorCode"]) == ("REJECTED", "SIGNATURE_REQUIRED")
    assert "require_signed_documents" in found["details"]["reason"]
    assert not device.started_an_apt_worker("unsigned-required")


def test_unsigned_document_runs_when_signatures_are_not_required(devices):
    device = devices["thing-2"]

    found = device.run("unsigned-optional", json.dumps({"jobType": "APT_UPDATE",
                                                        "aptPackageName": "epsilon"}))

    assert found["status"] == "SUCCEEDED", found
    assert device.root.installed_version("epsilon") == "1.0"


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_signed_document_is_checked_even_when_signatures_are_not_required(devices, keys,
                                                                          tmp_path, key_type):
    device = devices["thing-2"]
    signed = sign({"jobType": "APT_UPDATE", "aptPackageName": "epsilon"}, keys.private[key_type],
                  tmp_path)
    change_package(signed)
    job_id = f"tampered-optional-{key_type}"

    found = device.run(job_id, reserialized(signed))

    assert (found["status"], found["details"]["errorCode"]) == ("REJECTED", "SIGNATURE_INVALID")
    assert not device.started_an_apt_worker(job_id)
    assert device.root.installed_version("beta") is None


def test_a_job_resumed_after_a_restart_is_not_refused_for_an_expiry_that_passed_meanwhile(
    stack, keys, tmp_path
):
    """Its first attempt passed the check; the agent is killed mid-job, the signature expires,
    the restarted agent checks the document again but not its expiry, and resumes the job."""
    settings_path = stack.thing("thing-1").settings_path
    set_settings(settings_path, "agent", step_timeout_minutes=120, heartbeat_seconds=1,
                 progress_interval_seconds=0.1, shutdown_grace_seconds=2)
    set_settings(settings_path, "security", require_signed_documents="yes",
                 trusted_keys=keys.trusted_folder)
    agents = []

    def start() -> AgentProcess:
        agent = AgentProcess(settings_path, tmp_path / f"agent-{len(agents)}.log",
                             tmp_path / "runs.txt")
        agents.append(agent)
        agent.wait_log("connected; listening for jobs")
        return agent

    try:
        first = start()
        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=8)
        # safe to re-run; 60 s on its first attempt, done at once on the next
        document = {"jobType": "STUBBORN_RERUN", "seconds": 60, "then": 0}
        signed = sign(document, keys.private["p256"], tmp_path, "--job-id", "resumed-1",
                      "--expires", expires.strftime("%Y-%m-%dT%H:%M:%SZ"))
        create_job(stack, "resumed-1", signed)
        wait_for(lambda: first.runs(), 8, "the handler to start before the signature expires")
        first.kill()
        while datetime.datetime.now(datetime.timezone.utc) < expires + datetime.timedelta(
            seconds=1
        ):
            time.sleep(0.2)
        second = start()
        done = wait_status(stack, "resumed-1", timeout=30)
    finally:
        for agent in agents:
            agent.close()

    assert done["status"] == "SUCCEEDED", done
    assert done["details"]["attempt"] == "2"
    assert second.runs() == ["resumed-1 1", "resumed-1 2"]
    assert "document signature verified" in second.log_text()
