"""greengrass/recipe.yaml follows Greengrass's documented recipe format, and its lifecycle
keeps the agent's guarantees: one agent per device (the systemd service, started and stopped
by the component) and a component stop is a service stop. Every lifecycle step and
configuration key docs/greengrass.md names is in the recipe, and the other way round; the
settings the component writes are valid settings with the nucleus's client ids avoided."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_greengrass import check_config

from agent.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "greengrass" / "recipe.yaml"
LIFECYCLE = REPO / "greengrass" / "lifecycle.sh"
DOCS = REPO / "docs" / "greengrass.md"
sys.path.insert(0, str(REPO / "greengrass"))

import configure  # noqa: E402

# From the recipe reference (GGDG component-recipe-reference): the top-level keys, the
# lifecycle steps, and which of them only one may be given.
TOP_LEVEL = {
    "RecipeFormatVersion",
    "ComponentName",
    "ComponentVersion",
    "ComponentDescription",
    "ComponentPublisher",
    "ComponentSource",
    "ComponentConfiguration",
    "ComponentDependencies",
    "ComponentType",
    "Manifests",
    "Lifecycle",
}
STEPS = {"Setenv", "Bootstrap", "Install", "Run", "Startup", "Shutdown", "Recover"}
STEP_KEYS = {"Script", "RequiresPrivilege", "Skipif", "Timeout", "Setenv"}
SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?"
)


@pytest.fixture(scope="module")
def recipe():
    return yaml.safe_load(RECIPE.read_text())


@pytest.fixture(scope="module")
def manifest(recipe):
    (only,) = recipe["Manifests"]
    return only


def documented(heading: str) -> set:
    """The backticked first cells of the table under the heading in docs/greengrass.md."""
    text = DOCS.read_text()
    start = re.search(rf"^#+ {heading}$", text, re.MULTILINE)
    assert start, heading
    section = re.split(r"^#", text[start.end() :], maxsplit=1, flags=re.MULTILINE)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", section, re.MULTILINE))


def test_the_recipe_has_only_documented_keys_and_the_2020_format(recipe):
    assert set(recipe) <= TOP_LEVEL
    assert recipe["RecipeFormatVersion"] == "2020-01-25"
    assert SEMVER.fullmatch(recipe["ComponentVersion"])
    assert not recipe["ComponentName"].startswith("aws.greengrass")  # reserved for AWS


def test_the_manifest_is_for_linux_on_both_nuclei_with_a_zip_artifact(manifest):
    # Greengrass Lite only takes a manifest whose platform names runtime "*" (or its own).
    assert manifest["Platform"] == {"os": "linux", "runtime": "*"}
    (artifact,) = manifest["Artifacts"]
    assert artifact["URI"].startswith("s3://") and artifact["URI"].endswith(".zip")
    assert artifact["Unarchive"] == "ZIP"


def test_lifecycle_steps_are_install_run_and_shutdown_each_privileged(manifest):
    lifecycle = manifest["Lifecycle"]
    assert set(lifecycle) <= STEPS
    assert {"Install", "Run", "Shutdown"} <= set(lifecycle)
    assert "Startup" not in lifecycle  # only one of Run and Startup
    for name in ("Install", "Run", "Shutdown"):
        step = lifecycle[name]
        assert set(step) <= STEP_KEYS, name
        assert step["RequiresPrivilege"] is True, name  # systemctl, apt, /etc


def test_each_step_runs_the_lifecycle_script_verb_of_its_name(manifest):
    handled = set(re.findall(r"^    (\w+)\)$", LIFECYCLE.read_text(), re.MULTILINE))
    for name in ("Install", "Run", "Shutdown"):
        script = manifest["Lifecycle"][name]["Script"]
        verb = name.lower()
        assert f'"$AGENT_SOURCE/greengrass/lifecycle.sh" {verb}' in script
        assert verb in handled


def test_configuration_reaches_the_scripts_only_through_the_environment(recipe, manifest):
    keys = set(recipe["ComponentConfiguration"]["DefaultConfiguration"])
    setenv = manifest["Lifecycle"]["Setenv"]
    used = set()
    for value in setenv.values():
        used |= set(re.findall(r"\{configuration:/(\w+)\}", value))
    assert used == keys
    for step in ("Install", "Run", "Shutdown"):
        assert "{configuration:" not in manifest["Lifecycle"][step]["Script"]
    read = set(re.findall(r'"(AGENT_\w+)"', Path(configure.__file__).read_text()))
    assert read <= set(setenv), read - set(setenv)


def test_docs_name_exactly_the_recipes_configuration_keys(recipe):
    assert documented("Component configuration") == set(
        recipe["ComponentConfiguration"]["DefaultConfiguration"]
    )


def test_docs_name_exactly_the_recipes_lifecycle_steps(manifest):
    assert documented("Lifecycle") == set(manifest["Lifecycle"]) - {"Setenv"}


# the settings the component writes

ENVIRON = {
    "AWS_IOT_THING_NAME": "core-1",
    "AGENT_ALLOWED_PACKAGES": "nginx, libssl*",
    "AGENT_CLIENT_ID": "",
    "AGENT_ENDPOINT": "",
    "AGENT_NUCLEUS_ENDPOINT": "abc-ats.iot.eu-west-1.amazonaws.com",
}


@pytest.fixture
def environ(tmp_path, monkeypatch):
    monkeypatch.setenv("IOT_JOBS_AGENT_SYSTEM_ROOT", str(tmp_path / "no-greengrass-here"))
    for name in ("device.pem.crt", "private.pem.key", "AmazonRootCA1.pem"):
        (tmp_path / name).write_text("-----BEGIN X-----\n")
    os.chmod(tmp_path / "private.pem.key", 0o600)
    return dict(
        ENVIRON,
        AGENT_CERTIFICATE=str(tmp_path / "device.pem.crt"),
        AGENT_PRIVATE_KEY=str(tmp_path / "private.pem.key"),
        AGENT_ROOT_CA=str(tmp_path / "AmazonRootCA1.pem"),
    )


def test_written_settings_load_with_the_agents_own_client_id(tmp_path, environ):
    path = tmp_path / "settings.conf"
    configure.write_settings(path, environ)
    settings = load_settings(path)
    assert settings.connection.client_id == "core-1-jobs-agent"
    assert settings.connection.endpoint == "abc-ats.iot.eu-west-1.amazonaws.com"
    assert settings.section("apt")["allowed_packages"] == "nginx, libssl*"
    assert os.stat(path).st_mode & 0o077 == 0


def test_a_configured_client_id_the_nucleus_uses_fails_the_settings(tmp_path, environ):
    path = tmp_path / "settings.conf"
    configure.write_settings(path, dict(environ, AGENT_CLIENT_ID="core-1#2"))
    result = check_config(path)
    assert result.returncode == 2
    assert "[connection] client_id: 'core-1#2'" in result.stderr


def test_a_value_with_a_line_break_is_refused_not_written_as_another_key(tmp_path, environ):
    path = tmp_path / "settings.conf"
    hostile = dict(environ, AGENT_ALLOWED_PACKAGES="nginx\n[agent]\nstate_dir = /")
    with pytest.raises(configure.ConfigurationError, match="AGENT_ALLOWED_PACKAGES"):
        configure.write_settings(path, hostile)
    assert not path.exists()


def test_a_settings_file_written_by_hand_is_left_alone(tmp_path, environ):
    path = tmp_path / "settings.conf"
    path.write_text("[connection]\nendpoint = mine\n")
    with pytest.raises(configure.ConfigurationError, match="not written by this component"):
        configure.write_settings(path, environ)
    assert path.read_text() == "[connection]\nendpoint = mine\n"


# the run step follows the service and stops it when the nucleus stops the component

FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >>"$SYSTEMCTL_LOG"
case $1 in
    is-active) [ ! -e "$SYSTEMCTL_DOWN" ] ;;
    show) echo exit-code ;;
esac
"""


@pytest.fixture
def fake_systemctl(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755)
    log = tmp_path / "systemctl.log"
    env = dict(
        os.environ,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        SYSTEMCTL_LOG=str(log),
        SYSTEMCTL_DOWN=str(tmp_path / "down"),
    )
    return env, log, tmp_path / "down"


def calls(log: Path) -> list:
    return log.read_text().splitlines() if log.exists() else []


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_run_starts_the_service_and_sigterm_stops_it(fake_systemctl):
    env, log, _ = fake_systemctl
    run = subprocess.Popen(["bash", str(LIFECYCLE), "run"], env=env)
    try:
        assert wait_for(lambda: "is-active --quiet iot-jobs-agent.service" in calls(log))
        assert calls(log)[0] == "start iot-jobs-agent.service"
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=10) == 0
    finally:
        run.kill()
    assert calls(log)[-1] == "stop iot-jobs-agent.service"


def test_run_ends_in_error_when_the_service_stops_on_its_own(fake_systemctl):
    env, log, down = fake_systemctl
    down.touch()
    result = subprocess.run(
        ["bash", str(LIFECYCLE), "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "no longer active" in result.stderr
    assert "stop iot-jobs-agent.service" not in calls(log)


def test_shutdown_stops_the_service(fake_systemctl):
    env, log, _ = fake_systemctl
    subprocess.run(["bash", str(LIFECYCLE), "shutdown"], env=env, check=True, timeout=30)
    assert calls(log) == ["stop iot-jobs-agent.service"]


def test_the_deployment_example_names_the_recipes_component_version_and_keys(recipe):
    components = json.loads((REPO / "greengrass" / "components.json").read_text())
    assert list(components) == [recipe["ComponentName"]]
    (component,) = components.values()
    assert component["componentVersion"] == recipe["ComponentVersion"]
    merged = json.loads(component["configurationUpdate"]["merge"])
    assert set(merged) <= set(recipe["ComponentConfiguration"]["DefaultConfiguration"])
