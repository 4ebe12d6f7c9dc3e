"""settings.conf.example is a working settings file whose stated values are the real defaults.

Each loader (agent core, APT handler, managed templates) reads the example and a file with
only ``[connection]``; the values must come out the same.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from start_sh_fixtures import REPO_ROOT

from agent.settings import load_settings

EXAMPLE = REPO_ROOT / "settings.conf.example"
CONNECTION_ONLY = """\
[connection]
endpoint = xxxxxxxxxxxxxx-ats.iot.eu-west-1.amazonaws.com
thing_name = my-device
root_ca = certs/AmazonRootCA1.pem
certificate = certs/device.pem.crt
private_key = certs/private.pem.key
"""


@pytest.fixture
def folder(tmp_path) -> Path:
    """A folder with the certificate files the example's relative paths name."""
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("AmazonRootCA1.pem", "device.pem.crt", "private.pem.key"):
        (certs / name).write_text("placeholder\n")
    (certs / "private.pem.key").chmod(0o600)
    return tmp_path


@pytest.fixture
def example(folder):
    path = folder / "settings.conf"
    shutil.copy(EXAMPLE, path)
    return load_settings(path)


@pytest.fixture
def defaults(folder):
    path = folder / "minimal.conf"
    path.write_text(CONNECTION_ONLY)
    return load_settings(path)


def test_example_loads_with_client_id_defaulting_to_the_thing_name(example):
    assert example.connection.port == 8883
    assert example.connection.client_id == example.connection.thing_name


def test_example_connection_and_agent_values_are_the_defaults(example, defaults):
    assert example.connection == defaults.connection
    assert example.agent == defaults.agent


def test_example_apt_values_are_the_defaults(example, defaults):
    apt_settings = pytest.importorskip("agent.apt.settings")
    assert apt_settings.load_apt_settings(example) == apt_settings.load_apt_settings(defaults)


def test_example_managed_template_values_are_the_defaults(example, defaults):
    managed = pytest.importorskip("agent.managed.settings")
    loaded = managed.load_managed_settings(example)
    assert loaded == managed.load_managed_settings(defaults)
