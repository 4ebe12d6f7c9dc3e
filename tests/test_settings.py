"""load_settings and its converters: values checked, every error names file, section and key."""

import configparser
import os
from pathlib import Path

import pytest

from agent.errors import SettingsError
from agent.settings import (
    get_float,
    get_int,
    get_list,
    get_path,
    get_str,
    load_settings,
)


@pytest.fixture
def credentials(tmp_path):
    """Three readable credential files; the private key closed to group and others."""
    for name in ("ca.pem", "thing.crt", "thing.key"):
        (tmp_path / name).write_text("-----BEGIN X-----\n")
    os.chmod(tmp_path / "thing.key", 0o600)
    return tmp_path


def write_settings(directory: Path, connection=None, agent=None, extra: str = "") -> Path:
    values = {
        "endpoint": "localhost",
        "port": "8883",
        "thing_name": "thing-1",
        "root_ca": "ca.pem",
        "certificate": "thing.crt",
        "private_key": "thing.key",
    }
    values.update(connection or {})
    lines = ["[connection]"]
    lines += [f"{key} = {value}" for key, value in values.items() if value is not None]
    if agent is not None:
        lines.append("[agent]")
        lines += [f"{key} = {value}" for key, value in agent.items()]
    path = directory / "settings.conf"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def section(text: str, name: str = "apt") -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(f"[{name}]\n{text}")
    return parser[name]


CONF = Path("/etc/agent/settings.conf")


def test_minimal_file_gets_the_documented_defaults(credentials):
    settings = load_settings(write_settings(credentials))
    assert settings.connection.port == 8883
    assert settings.connection.client_id == "thing-1"
    assert settings.connection.root_ca == credentials / "ca.pem"
    assert settings.agent.state_dir == credentials / "state"
    assert settings.agent.log_level == "INFO"
    assert settings.agent.step_timeout_minutes == 10
    assert settings.agent.heartbeat_seconds == 200.0
    assert settings.agent.shutdown_grace_seconds == 60.0
    assert settings.agent.progress_interval_seconds == 5.0
    assert settings.agent.watchdog_offline_seconds == 300.0


def test_agent_values_are_read_and_converted(credentials):
    path = write_settings(
        credentials,
        connection={"client_id": "other-id", "port": "443"},
        agent={
            "state_dir": "/var/lib/x",
            "log_level": "debug",
            "step_timeout_minutes": "2",
            "heartbeat_seconds": "7.5",
            "shutdown_grace_seconds": "0",
        },
    )
    settings = load_settings(path)
    assert settings.connection.client_id == "other-id"
    assert settings.connection.port == 443
    assert settings.agent.state_dir == Path("/var/lib/x")
    assert settings.agent.log_level == "DEBUG"
    assert settings.agent.heartbeat_seconds == 7.5
    assert settings.agent.shutdown_grace_seconds == 0.0


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SettingsError, match=r"settings\.conf: settings file not found"):
        load_settings(tmp_path / "settings.conf")


def test_file_that_is_not_ini_is_reported(tmp_path):
    path = tmp_path / "settings.conf"
    path.write_text("endpoint = x\n")
    with pytest.raises(SettingsError, match="not a valid settings file"):
        load_settings(path)


def test_missing_connection_section_is_named(tmp_path):
    path = tmp_path / "settings.conf"
    path.write_text("[agent]\n")
    with pytest.raises(SettingsError, match=r"\[connection\]: section missing"):
        load_settings(path)


@pytest.mark.parametrize(
    ("connection", "agent", "message"),
    [
        ({"endpoint": None}, None, r"\[connection\] endpoint: missing; a value is required"),
        ({"endpoint": ""}, None, r"\[connection\] endpoint: empty; a value is required"),
        ({"endpoint": "mqtts://x"}, None, r"\[connection\] endpoint: expected a host name"),
        ({"port": "eighty"}, None, r"\[connection\] port: expected a whole number, got 'eighty'"),
        ({"port": "70000"}, None, r"\[connection\] port: must be at most 65535"),
        ({"thing_name": "a b"}, None, r"\[connection\] thing_name: expected 1 to 128"),
        ({"root_ca": "nope.pem"}, None, r"\[connection\] root_ca: '.*nope\.pem' does not exist"),
        ({"bogus": "1"}, None, r"\[connection\] bogus: unknown key"),
        (None, {"step_timeout_minutes": "0"}, r"\[agent\] step_timeout_minutes: must be at least"),
        (None, {"log_level": "LOUD"}, r"\[agent\] log_level: expected one of CRITICAL"),
        (None, {"heartbeat_seconds": "400"}, r"\[agent\] heartbeat_seconds: must be at most 300"),
        (None, {"shutdown_grace_seconds": "nan"}, r"\[agent\] shutdown_grace_seconds: expected"),
        (None, {"stepp_timeout": "1"}, r"\[agent\] stepp_timeout: unknown key"),
    ],
    ids=[
        "endpoint_missing",
        "endpoint_empty",
        "endpoint_with_scheme",
        "port_not_a_number",
        "port_out_of_range",
        "thing_name_bad_characters",
        "root_ca_missing_file",
        "unknown_connection_key",
        "step_timeout_too_small",
        "log_level_unknown",
        "heartbeat_longer_than_half_the_step_timeout",
        "grace_not_finite",
        "unknown_agent_key",
    ],
)
def test_bad_value_is_reported_with_file_section_and_key(credentials, connection, agent, message):
    path = write_settings(credentials, connection=connection, agent=agent)
    with pytest.raises(SettingsError, match=message) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}: [")


def test_every_bad_value_is_listed_at_once(credentials):
    path = write_settings(credentials, connection={"port": "x"}, agent={"log_level": "y"})
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert "[connection] port" in lines[0]
    assert "[agent] log_level" in lines[1]


def test_private_key_readable_by_others_is_refused(credentials):
    os.chmod(credentials / "thing.key", 0o644)
    with pytest.raises(SettingsError, match=r"private_key: .*\(mode 0644\); run: chmod 600"):
        load_settings(write_settings(credentials))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_certificate_is_reported(credentials):
    os.chmod(credentials / "thing.crt", 0)
    with pytest.raises(SettingsError, match=r"\[connection\] certificate: cannot read"):
        load_settings(write_settings(credentials))


def test_credential_that_is_a_folder_is_reported(credentials):
    (credentials / "dir.pem").mkdir()
    with pytest.raises(SettingsError, match=r"\[connection\] root_ca: .* is not a file"):
        load_settings(write_settings(credentials, connection={"root_ca": "dir.pem"}))


def test_handler_sections_are_reachable_raw(credentials):
    settings = load_settings(write_settings(credentials, extra="[apt]\nlock_timeout_seconds = 5\n"))
    assert settings.section("apt")["lock_timeout_seconds"] == "5"
    absent = settings.section("absent")
    assert absent.get("anything", "fallback") == "fallback"
    assert list(absent) == []
    assert absent.name == "absent"


def test_percent_sign_is_taken_literally(credentials):
    path = write_settings(credentials, extra="[apt]\nallowed_packages = 100%\n")
    assert load_settings(path).section("apt")["allowed_packages"] == "100%"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a, b c\n  d", ("a", "b", "c", "d")), ("single", ("single",)), ("", ())],
)
def test_get_list_splits_on_commas_and_blanks(text, expected):
    assert get_list(section(f"k = {text}"), "k", (), path=CONF) == expected


def test_get_str_keeps_an_empty_value_unless_required():
    assert get_str(section("root_dir ="), "root_dir", "/", path=CONF) == ""
    assert get_str(section(""), "root_dir", "/", path=CONF) == "/"
    with pytest.raises(SettingsError, match=r"^/etc/agent/settings\.conf: \[apt\] root_dir: empty"):
        get_str(section("root_dir ="), "root_dir", path=CONF)


def test_get_int_error_quotes_the_value():
    with pytest.raises(
        SettingsError,
        match=r"^/etc/agent/settings\.conf: \[apt\] lock_timeout_seconds: "
        r"expected a whole number, got 'abc'$",
    ):
        get_int(section("lock_timeout_seconds = abc"), "lock_timeout_seconds", 300, path=CONF)


def test_get_int_empty_value_means_default():
    assert get_int(section("n ="), "n", 300, path=CONF) == 300


def test_get_float_checks_bounds():
    with pytest.raises(SettingsError, match=r"\[apt\] t: must be at least 1"):
        get_float(section("t = 0.5"), "t", 2.0, path=CONF, minimum=1)


def test_get_path_is_relative_to_the_settings_file(tmp_path):
    conf = tmp_path / "settings.conf"
    (tmp_path / "root").mkdir()
    assert get_path(section("root_dir = root"), "root_dir", path=conf) == tmp_path / "root"


def test_get_path_must_exist_names_the_key(tmp_path):
    conf = tmp_path / "settings.conf"
    with pytest.raises(SettingsError, match=r"\[apt\] root_dir: '.*/missing' does not exist"):
        get_path(section("root_dir = missing"), "root_dir", path=conf)
    assert get_path(section("d = missing"), "d", path=conf, must_exist=False).name == "missing"


def test_state_dir_under_a_file_is_refused(credentials):
    (credentials / "a-file").write_text("x")
    path = write_settings(credentials, agent={"state_dir": "a-file/state"})
    with pytest.raises(SettingsError, match=r"\[agent\] state_dir: .* cannot be made: .*a-file"):
        load_settings(path)


def test_state_dir_that_is_a_file_is_refused(credentials):
    (credentials / "a-file").write_text("x")
    path = write_settings(credentials, agent={"state_dir": "a-file"})
    with pytest.raises(SettingsError, match=r"\[agent\] state_dir: .*a-file' is not a folder"):
        load_settings(path)
