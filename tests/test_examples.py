"""examples/: every job document is valid for the APT handler, and runs in the local demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from start_sh_fixtures import REPO_ROOT

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.json"))
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
