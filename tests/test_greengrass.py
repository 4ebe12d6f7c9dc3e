"""On a Greengrass core device the agent never connects with a client id the nucleus uses:
the installation is found (v2 nucleus, Lite, v1) or named in settings, the default client id
there is ``<thing>-jobs-agent``, and ``--check-config`` refuses a colliding
``[connection] client_id``, naming it and what to set."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from stack_helpers import run_jobs_agent
from test_examples_iot_policy import RecordingMqttClient, policy_matches
from test_settings import write_settings

from agent import greengrass
from agent.errors import SettingsError
from agent.settings import load_settings
from job_client import JobClient

REPO = Path(__file__).resolve().parent.parent
THING = "core-1"

V2_EFFECTIVE_CONFIG = """\
---
services:
  aws.greengrass.Nucleus:
    configuration:
      awsRegion: "eu-west-1"
system:
  certificateFilePath: "/greengrass/v2/device.pem.crt"
  privateKeyPath: "/greengrass/v2/private.pem.key"
  rootCaPath: "/greengrass/v2/AmazonRootCA1.pem"
  rootpath: "/greengrass/v2"
  thingName: "core-1"
"""

LITE_CONFIG = """\
system:
  privateKeyPath: "/var/lib/greengrass/device.key"
  certificateFilePath: "/var/lib/greengrass/device.pem"
  rootCaPath: "/var/lib/greengrass/AmazonRootCA1.pem"
  rootPath: "/var/lib/greengrass"
  thingName: 'core-1'
services:
  aws.greengrass.NucleusLite:
    componentType: "NUCLEUS"
    configuration:
      thingName: "not-this-one"
"""


def write(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def system_root(tmp_path, monkeypatch) -> Path:
    """An empty system root the settings loader searches for Greengrass instead of /."""
    root = tmp_path / "system"
    root.mkdir()
    monkeypatch.setenv("IOT_JOBS_AGENT_SYSTEM_ROOT", str(root))
    return root


@pytest.fixture
def credentials(tmp_path):
    folder = tmp_path / "etc"
    folder.mkdir()
    for name in ("ca.pem", "thing.crt", "thing.key"):
        (folder / name).write_text("-----BEGIN X-----\n")
    os.chmod(folder / "thing.key", 0o600)
    return folder


def check_config(path: Path) -> subprocess.CompletedProcess:
    """``jobs_agent.py --check-config`` on the settings file at ``path``, as a user runs it."""
    return run_jobs_agent("--check-config", "-c", str(path), timeout=60)


# finding the installation


def test_no_installation_is_found_on_a_plain_system(tmp_path):
    assert greengrass.detect(tmp_path) is None


def test_a_v2_nucleus_is_found_with_its_thing_name(tmp_path):
    write(tmp_path / "greengrass/v2/config/effectiveConfig.yaml", V2_EFFECTIVE_CONFIG)
    core = greengrass.detect(tmp_path)
    assert core is not None
    assert (core.runtime, core.thing_name) == ("Greengrass v2 nucleus", THING)


def test_a_v2_root_without_a_readable_config_is_still_a_core(tmp_path):
    (tmp_path / "greengrass/v2").mkdir(parents=True)
    core = greengrass.detect(tmp_path)
    assert core is not None and core.thing_name is None


def test_greengrass_lite_is_found_by_its_config_with_the_system_thing_name(tmp_path):
    write(tmp_path / "etc/greengrass/config.yaml", LITE_CONFIG)
    core = greengrass.detect(tmp_path)
    assert core is not None
    assert (core.runtime, core.thing_name) == ("Greengrass Lite", THING)


def test_greengrass_lite_is_found_by_its_systemd_target(tmp_path):
    write(tmp_path / "usr/lib/systemd/system/greengrass-lite.target")
    core = greengrass.detect(tmp_path)
    assert core is not None and core.runtime == "Greengrass Lite"


def test_a_v1_core_is_found_with_the_thing_of_its_arn(tmp_path):
    arn = f"arn:aws:iot:eu-west-1:123456789012:thing/{THING}"
    write(tmp_path / "greengrass/config/config.json", json.dumps({"coreThing": {"thingArn": arn}}))
    core = greengrass.detect(tmp_path)
    assert core is not None
    assert (core.runtime, core.thing_name) == ("Greengrass v1 core", THING)


@pytest.mark.parametrize(
    "client_id, used",
    [
        ("core-1", True),
        ("core-1#2", True),
        ("core-1#17", True),
        ("core-1#endpoint-switch", True),
        ("core-1-c00", True),
        ("core-1-c05", True),
        ("core-1-jobs-agent", False),
        ("core-1-c", False),
        ("core-10", False),
        ("jobs-agent", False),
    ],
)
def test_the_client_ids_a_nucleus_connects_with(client_id, used):
    assert greengrass.nucleus_uses(client_id, THING) is used


# the client id settings give


def test_on_a_found_core_the_default_client_id_is_the_thing_name_and_jobs_agent(
    credentials, system_root
):
    write(system_root / "greengrass/v2/config/effectiveConfig.yaml", V2_EFFECTIVE_CONFIG)
    settings = load_settings(write_settings(credentials, {"thing_name": THING}))
    assert settings.connection.client_id == "core-1-jobs-agent"
    assert "Greengrass v2 nucleus" in settings.connection.greengrass


def test_without_greengrass_the_default_client_id_stays_the_thing_name(credentials, system_root):
    settings = load_settings(write_settings(credentials, {"thing_name": THING}))
    assert settings.connection.client_id == THING
    assert settings.connection.greengrass == ""


def test_told_greengrass_yes_the_agent_avoids_the_nucleus_ids_without_finding_it(
    credentials, system_root
):
    path = write_settings(credentials, {"thing_name": THING, "greengrass": "yes"})
    assert load_settings(path).connection.client_id == "core-1-jobs-agent"


def test_told_greengrass_no_the_installation_is_ignored(credentials, system_root):
    (system_root / "greengrass/v2").mkdir(parents=True)
    path = write_settings(credentials, {"thing_name": THING, "greengrass": "no"})
    assert load_settings(path).connection.client_id == THING


def test_an_agent_of_another_thing_on_a_core_keeps_its_thing_name_as_client_id(
    credentials, system_root
):
    write(system_root / "greengrass/v2/config/effectiveConfig.yaml", V2_EFFECTIVE_CONFIG)
    path = write_settings(credentials, {"thing_name": "jobs-thing"})
    assert load_settings(path).connection.client_id == "jobs-thing"


@pytest.mark.parametrize("client_id", ["core-1", "core-1#2", "core-1#endpoint-switch"])
def test_a_client_id_the_nucleus_uses_is_refused_naming_the_key_and_what_to_set(
    credentials, system_root, client_id
):
    write(system_root / "greengrass/v2/config/effectiveConfig.yaml", V2_EFFECTIVE_CONFIG)
    path = write_settings(credentials, {"thing_name": THING, "client_id": client_id})
    with pytest.raises(SettingsError) as refused:
        load_settings(path)
    message = str(refused.value)
    assert f"{path}: [connection] client_id: {client_id!r}" in message
    assert "Greengrass nucleus" in message
    assert "Set client_id = core-1-jobs-agent" in message


def test_the_cores_own_thing_name_counts_even_when_the_agent_names_another_thing(
    credentials, system_root
):
    write(system_root / "greengrass/v2/config/effectiveConfig.yaml", V2_EFFECTIVE_CONFIG)
    path = write_settings(credentials, {"thing_name": "jobs-thing", "client_id": THING})
    with pytest.raises(SettingsError, match=r"\[connection\] client_id: 'core-1'"):
        load_settings(path)


def test_a_greengrass_value_outside_the_choices_is_named(credentials, system_root):
    path = write_settings(credentials, {"greengrass": "maybe"})
    with pytest.raises(SettingsError, match=r"\[connection\] greengrass: expected one of auto"):
        load_settings(path)


def test_check_config_exits_2_for_a_colliding_client_id_and_says_what_to_set(
    credentials, system_root
):
    write(system_root / "etc/greengrass/config.yaml", LITE_CONFIG)
    path = write_settings(credentials, {"thing_name": THING, "client_id": THING})
    result = check_config(path)
    assert result.returncode == 2
    assert "[connection] client_id: 'core-1'" in result.stderr
    assert "Greengrass Lite" in result.stderr
    assert "Set client_id = core-1-jobs-agent" in result.stderr


# the IoT policy for an agent on a core device

POLICY = REPO / "examples" / "iot-policy-greengrass-core.json"
ARN_PREFIX = "arn:aws:iot:REGION:ACCOUNT:"
# Every topic the nucleus (v2 and Lite) uses for its deployment jobs (docs/greengrass.md).
DEPLOYMENT_TOPICS = [
    f"$aws/things/{THING}/jobs/notify-namespace-aws-gg-deployment",
    f"$aws/things/{THING}/jobs/notify-next-namespace-aws-gg-deployment",
    f"$aws/things/{THING}/jobs/$next/namespace-aws-gg-deployment/get",
    f"$aws/things/{THING}/jobs/$next/namespace-aws-gg-deployment/get/accepted",
    f"$aws/things/{THING}/jobs/$next/namespace-aws-gg-deployment/get/rejected",
    f"$aws/things/{THING}/jobs/deploy-1/namespace-aws-gg-deployment/update",
    f"$aws/things/{THING}/jobs/deploy-1/namespace-aws-gg-deployment/update/accepted",
    f"$aws/things/{THING}/jobs/deploy-1/namespace-aws-gg-deployment/update/rejected",
]


def allowed(action: str, kind: str, name: str) -> bool:
    """Whether the example policy, for THING, lets ``action`` on ``kind``/``name`` through."""
    verdicts = set()
    for statement in json.loads(POLICY.read_text())["Statement"]:
        actions = statement["Action"]
        if action not in ([actions] if isinstance(actions, str) else actions):
            continue
        listed = statement["Resource"]
        for resource in [listed] if isinstance(listed, str) else listed:
            pattern = resource.replace("CORE_THING_NAME", THING)
            assert pattern.startswith(ARN_PREFIX), resource
            if policy_matches(pattern, f"{ARN_PREFIX}{kind}/{name}"):
                verdicts.add(statement["Effect"])
    return verdicts == {"Allow"}


def mqtt_filter_matches(topic_filter: str, topic: str) -> bool:
    filter_levels, topic_levels = topic_filter.split("/"), topic.split("/")
    if filter_levels[-1] == "#":
        return topic_levels[: len(filter_levels) - 1] == filter_levels[:-1]
    return len(filter_levels) == len(topic_levels) and all(
        f in ("+", t) for f, t in zip(filter_levels, topic_levels)
    )


@pytest.fixture(scope="module")
def agent_session() -> RecordingMqttClient:
    """One JobClient of the core's thing: start, first claim, stop, recorded."""
    mqtt = RecordingMqttClient()
    client = JobClient(mqtt, THING, request_timeout_seconds=0.5)
    client.start()
    try:
        assert mqtt.published_event.wait(10), "the client published nothing"
    finally:
        client.stop()
    return mqtt


def test_the_core_policy_lets_the_agent_connect_only_with_its_own_client_id():
    assert allowed("iot:Connect", "client", greengrass.default_client_id(THING))
    for nucleus_id in (THING, f"{THING}#2", f"{THING}#endpoint-switch", "other-jobs-agent"):
        assert not allowed("iot:Connect", "client", nucleus_id), nucleus_id


def test_the_core_policy_grants_every_subscription_and_publish_the_agent_makes(agent_session):
    for topic_filter in agent_session.subscribed:
        assert allowed("iot:Subscribe", "topicfilter", topic_filter), topic_filter
        assert allowed("iot:Receive", "topic", topic_filter.replace("+", "job-1")), topic_filter
    for topic, _ in agent_session.published:
        assert allowed("iot:Publish", "topic", topic), topic
    assert allowed("iot:Publish", "topic", f"$aws/things/{THING}/jobs/job-1/update")


def test_the_agent_never_subscribes_to_a_greengrass_deployment_topic(agent_session):
    for topic_filter in agent_session.subscribed:
        for topic in DEPLOYMENT_TOPICS:
            assert not mqtt_filter_matches(topic_filter, topic), (topic_filter, topic)
    assert not any("namespace-" in topic for topic, _ in agent_session.published)


@pytest.mark.parametrize("topic", DEPLOYMENT_TOPICS)
def test_the_core_policy_denies_the_agent_every_greengrass_deployment_topic(topic):
    assert not allowed("iot:Publish", "topic", topic)
    assert not allowed("iot:Receive", "topic", topic)
    assert not allowed("iot:Subscribe", "topicfilter", topic)
