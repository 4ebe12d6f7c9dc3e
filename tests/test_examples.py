"""examples/: every job document is valid for the APT handler, and runs in the local demo."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from start_sh_fixtures import REPO_ROOT

EXAMPLES = sorted((REPO_ROOT / "examples").glob("apt-*.json"))
# The packages of the local demo (local_jobs/apt_repo.py), which the examples name.
DEMO_ALLOWED = ("cowsay", "cowsay-data", "hello-iot")


def test_there_are_examples_for_single_pinned_several_and_dry_run():
    names = {path.name for path in EXAMPLES}
    assert names >= {
        "apt-update-single.json",
        "apt-update-pinned.json",
        "apt-update-several.json",
        "apt-update-dry-run.json",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_is_an_apt_update_document_the_handler_accepts(path: Path):
    document_module = pytest.importorskip("agent.apt.document")
    document = json.loads(path.read_text())
    assert document["jobType"] == "APT_UPDATE"
    request = document_module.parse_document(document, DEMO_ALLOWED)
    assert request.packages


def test_dry_run_example_asks_for_a_dry_run():
    document_module = pytest.importorskip("agent.apt.document")
    document = json.loads((REPO_ROOT / "examples" / "apt-update-dry-run.json").read_text())
    assert document_module.parse_document(document, DEMO_ALLOWED).dry_run


def test_pinned_example_pins_a_version():
    document_module = pytest.importorskip("agent.apt.document")
    document = json.loads((REPO_ROOT / "examples" / "apt-update-pinned.json").read_text())
    request = document_module.parse_document(document, DEMO_ALLOWED)
    assert [package.version for package in request.packages] == ["1.0-1"]


@pytest.fixture(scope="module")
def demo_apt(tmp_path_factory):
    """The local demo's repository and apt root, built once; each test works on a copy."""
    apt_repo = pytest.importorskip("local_jobs.apt_repo")
    return apt_repo.demo_setup(tmp_path_factory.mktemp("demo-apt"))


def run_example(stack, demo_apt, tmp_path, name: str):
    """Run examples/NAME through the real agent into a copy of the demo root."""
    from local_jobs.apt_repo import AptRoot
    from local_jobs.demo import ExecutionWatcher, NotifyListener, configure_thing, start_agent

    root = AptRoot(demo_apt.root).copy_to(tmp_path / "root")
    thing = stack.thing("thing-1")
    configure_thing(thing.settings_path, root.path, demo_apt.allowed_packages)
    document = (REPO_ROOT / "examples" / name).read_text()
    iot = stack.iot_client()
    iot.create_job(jobId="example", targets=[thing.arn], document=document)
    notify = NotifyListener()
    agent = start_agent(thing.settings_path, notify.path, tmp_path / "agent.log")
    try:
        watcher = ExecutionWatcher(
            lambda: iot.describe_job_execution(jobId="example", thingName="thing-1")["execution"],
            lambda line: None,
        )
        execution = watcher.wait_terminal(time.monotonic() + 90, agent.running)
    finally:
        agent.stop()
        notify.close()
    assert execution is not None, agent.log_tail()
    assert execution["status"] == "SUCCEEDED", (execution, agent.log_tail())
    return root, execution["statusDetails"]["detailsMap"]


@pytest.mark.timeout(150)
def test_single_example_installs_the_package(stack, demo_apt, tmp_path):
    root, _ = run_example(stack, demo_apt, tmp_path, "apt-update-single.json")
    assert root.installed_version("cowsay") == "3.03+dfsg2-8"


@pytest.mark.timeout(150)
def test_pinned_example_installs_the_pinned_version(stack, demo_apt, tmp_path):
    root, _ = run_example(stack, demo_apt, tmp_path, "apt-update-pinned.json")
    assert root.installed_version("hello-iot") == "1.0-1"


@pytest.mark.timeout(150)
def test_several_example_installs_every_package(stack, demo_apt, tmp_path):
    root, _ = run_example(stack, demo_apt, tmp_path, "apt-update-several.json")
    assert root.installed_version("cowsay") == "3.03+dfsg2-8"
    assert root.installed_version("hello-iot") == "2.0-1"


@pytest.mark.timeout(150)
def test_dry_run_example_changes_nothing(stack, demo_apt, tmp_path):
    root, details = run_example(stack, demo_apt, tmp_path, "apt-update-dry-run.json")
    assert "dry-run" in details["result"], details
    assert root.installed_version("cowsay") is None
    assert root.installed_version("hello-iot") is None
