"""A table of known attacks sent as real jobs through the local Jobs service (boto3 CreateJob) to
the real jobs_agent.py with the real APT handler, allowed to install only ``cowsay``: every one
ends REJECTED with a reason, no command runs (each injection would create a sentinel file) and
no apt worker is started (the handler logs every start). Documents the service itself refuses
(over 32 KB, not a JSON object) never reach the agent.
"""

from __future__ import annotations

import json

import pytest
from agent_core_fixtures import execution, running_jobs_agent, wait_status
from botocore.exceptions import ClientError
from stack_helpers import set_settings

from local_jobs.stack import LocalStack

pytestmark = pytest.mark.timeout(60)

S = "/tmp/hostile-e2e-sentinel"  # replaced per run by the module's own path


def attacks(sentinel: str):
    touch = f"touch {sentinel}"
    return [
        ("semicolon", {"aptPackageName": f"cowsay; {touch}"}),
        ("and-and", {"aptPackageName": f"cowsay && {touch}"}),
        ("pipe", {"aptPackageName": f"cowsay | sh -c '{touch}'"}),
        ("subshell", {"aptPackageName": f"$({touch})"}),
        ("backticks", {"aptPackageName": f"`{touch}`"}),
        ("newline", {"aptPackageName": f"cowsay\n{touch}"}),
        ("redirect", {"aptPackageName": f"cowsay > {sentinel}"}),
        ("option-pre-invoke", {"aptPackageName": f"-oAPT::Update::Pre-Invoke::={touch}"}),
        ("option-in-version", {"aptPackageName": "cowsay", "aptPackageVersion": f"1.0 -o {touch}"}),
        ("allow-unauthenticated", {"aptPackageName": "--allow-unauthenticated"}),
        ("force-yes-in-list", {"aptPackages": ["cowsay", "--force-yes"]}),
        ("dpkg-option", {"aptPackageName": "cowsay", "aptPackageVersion": "--force-all"}),
        ("path-traversal", {"aptPackageName": "../../../../etc/passwd"}),
        ("absolute-deb", {"aptPackageName": f"{sentinel}.deb"}),
        ("url", {"aptPackageName": "http://example.invalid/evil.deb"}),
        ("release-pin", {"aptPackageName": "cowsay/unstable"}),
        ("version-pin-syntax", {"aptPackageName": "cowsay=1.0"}),
        ("glob", {"aptPackageName": "cow*"}),
        ("not-allowed", {"aptPackageName": "openssh-server"}),
        ("not-allowed-arch", {"aptPackageName": "bash:amd64"}),
        ("homoglyph", {"aptPackageName": "cows\u0430y"}),
        ("nul", {"aptPackageName": "cowsay\u0000"}),
        ("wrong-type-name", {"aptPackageName": ["cowsay"]}),
        ("wrong-type-flag", {"aptPackageName": "cowsay", "dryRun": "false"}),
        ("wrong-type-list", {"aptPackages": "cowsay"}),
        ("both-forms", {"aptPackageName": "cowsay", "aptPackages": ["cowsay"]}),
        ("too-many", {"aptPackages": [f"p{i}x" for i in range(40)]}),
        ("huge-name", {"aptPackageName": "a" * 30000}),
        ("deep-unknown-field",
         {"aptPackageName": "x;y", "extra": json.loads("[" * 100 + "]" * 100)}),
    ]  # fmt: skip


ATTACK_NAMES = [name for name, _ in attacks(S)]


@pytest.fixture(scope="module")
def hostile_setup(tmp_path_factory):
    """One stack and one agent process for the whole table (each worker of xdist its own)."""
    folder = tmp_path_factory.mktemp("hostile-e2e")
    sentinel = folder / "a-command-ran"
    apt_root = folder / "empty-root"
    apt_root.mkdir()
    stack = LocalStack(folder / "stack", things=["thing-1"], minute_seconds=1.0).start()
    settings_path = stack.thing("thing-1").settings_path
    set_settings(settings_path, "apt", root_dir=apt_root, allowed_packages="cowsay")
    log_path = folder / "agent.log"
    try:
        with running_jobs_agent(settings_path, log_path):
            yield stack, sentinel, log_path, apt_root
    finally:
        stack.stop()


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_a_known_attack_is_rejected_and_runs_nothing(hostile_setup, name):
    stack, sentinel, log_path, apt_root = hostile_setup
    document = {"jobType": "APT_UPDATE", **dict(attacks(str(sentinel)))[name]}
    job_id = f"attack-{name}"
    stack.iot_client().create_job(
        jobId=job_id, targets=[stack.thing("thing-1").arn], document=json.dumps(document)
    )
    done = wait_status(stack, job_id, timeout=30)
    assert done["status"] == "REJECTED", done
    assert done["details"]["errorCode"] in ("INVALID_DOCUMENT", "NOT_ALLOWED"), done
    assert done["details"]["reason"]
    assert not sentinel.exists()
    assert "apt worker started" not in log_path.read_text(errors="replace")
    assert list(apt_root.iterdir()) == []


@pytest.mark.parametrize(
    "name, document",
    [
        ("over-32-KB", json.dumps({"jobType": "APT_UPDATE", "aptPackageName": "a" * 33000})),
        ("not-json", "{jobType: APT_UPDATE"),
        ("not-an-object", json.dumps(["APT_UPDATE", "cowsay"])),
    ],
)
def test_a_document_the_service_refuses_never_reaches_the_agent(hostile_setup, name, document):
    stack = hostile_setup[0]
    with pytest.raises(ClientError) as refused:
        stack.iot_client().create_job(
            jobId=f"refused-{name}", targets=[stack.thing("thing-1").arn], document=document
        )
    assert refused.value.response["Error"]["Code"] == "InvalidRequestException"
    with pytest.raises(ClientError):
        execution(stack, f"refused-{name}")
