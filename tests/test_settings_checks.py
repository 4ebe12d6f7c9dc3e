"""What the TLS stack and AWS IoT would refuse is caught before connecting: the example's
placeholder endpoint, a CA or certificate that does not parse, a private key given as the
certificate or not matching it, and a misspelt section or key. ``jobs_agent.py --check-config``
and a plain start both exit 2 naming the file, the section and the key.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import pytest
from stack_helpers import run_jobs_agent

import jobs_agent
from agent.settings import load_settings
from local_jobs.certificates import ensure_certificates

pytestmark = pytest.mark.timeout(60)


class Case(NamedTuple):
    id: str
    change: Callable[[configparser.ConfigParser, Path], None]
    named: str  # what the message starts with, after the file name
    says: str  # what it says about it


def set_value(section: str, key: str, value: Callable[[Path], str]):
    def change(parser: configparser.ConfigParser, folder: Path) -> None:
        if not parser.has_section(section):
            parser.add_section(section)
        parser.set(section, key, value(folder))

    return change


def garbage(name: str) -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        path = folder / name
        path.write_text("this is not PEM\n")
        path.chmod(0o600)
        return str(path)

    return make


def copy_closed(name: str) -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        path = folder / f"copy-of-{Path(name).name}"
        shutil.copy(folder / name, path)
        path.chmod(0o600)
        return str(path)

    return make


def rename_section(old: str, new: str):
    def change(parser: configparser.ConfigParser, folder: Path) -> None:
        parser.add_section(new)
        for key, value in parser.items(old, raw=True):
            parser.set(new, key, value)
        parser.remove_section(old)

    return change


CASES = [
    Case(
        "placeholder-endpoint",
        set_value(
            "connection", "endpoint", lambda f: "xxxxxxxxxxxxxx-ats.iot.eu-west-1.amazonaws.com"
        ),
        "[connection] endpoint:",
        "is the example's placeholder; use your account's endpoint",
    ),
    Case(
        "garbage-certificate",
        set_value("connection", "certificate", garbage("garbage.crt")),
        "[connection] certificate:",
        "is not a PEM certificate",
    ),
    Case(
        "private-key-given-as-certificate",
        set_value("connection", "certificate", lambda f: str(f / "things" / "thing-1.key")),
        "[connection] certificate:",
        "holds a private key, not a certificate",
    ),
    Case(
        "key-not-matching-certificate",
        set_value("connection", "private_key", lambda f: str(f / "things" / "thing-2.key")),
        "[connection] private_key:",
        "does not belong to the certificate",
    ),
    Case(
        "certificate-given-as-private-key",
        set_value("connection", "private_key", copy_closed("things/thing-1.crt")),
        "[connection] private_key:",
        "holds a certificate, not a private key",
    ),
    Case(
        "garbage-ca",
        set_value("connection", "root_ca", garbage("garbage-ca.pem")),
        "[connection] root_ca:",
        "is not a PEM certificate",
    ),
    Case(
        "misspelt-section",
        rename_section("apt", "apts"),
        "[apts]:",
        "unknown section; did you mean [apt]?",
    ),
    Case(
        "misspelt-key",
        set_value("agent", "state_directory", lambda f: str(f / "state")),
        "[agent] state_directory:",
        "unknown key; did you mean 'state_dir'?",
    ),
    Case(
        "unknown-key-like-no-other",
        set_value("apt", "colour", lambda f: "blue"),
        "[apt] colour:",
        "unknown key (known: allowed_packages,",
    ),
]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    ensure_certificates(folder, ["thing-1", "thing-2"])
    return folder


@pytest.fixture
def folder(certificates, tmp_path) -> Path:
    """A copy of the certificates of two things, where the settings file is written too."""
    made = tmp_path / "device"
    shutil.copytree(certificates, made)
    return made


def write_settings(folder: Path, change=None) -> Path:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict(
        {
            "connection": {
                "endpoint": "localhost",
                "port": "8883",
                "thing_name": "thing-1",
                "root_ca": str(folder / "ca.crt"),
                "certificate": str(folder / "things" / "thing-1.crt"),
                "private_key": str(folder / "things" / "thing-1.key"),
            },
            "agent": {"state_dir": str(folder / "state")},
            "apt": {"allowed_packages": "cowsay"},
        }
    )
    if change is not None:
        change(parser, folder)
    path = folder / "settings.conf"
    with open(path, "w") as stream:
        parser.write(stream)
    return path


def run_agent(path: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return run_jobs_agent("-c", str(path), *args, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("the agent did not exit: the broken setting was accepted")


def test_matching_certificate_and_key_pass_the_check(folder):
    result = run_agent(write_settings(folder), "--check-config")
    assert result.returncode == 0, result.stderr
    assert "settings are valid" in result.stdout


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_check_config_names_file_section_and_key_and_exits_2(folder, case):
    path = write_settings(folder, case.change)
    result = run_agent(path, "--check-config")
    assert result.returncode == 2, result.stderr
    assert f"{path}: {case.named} " in result.stderr, result.stderr
    assert case.says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "case",
    [case for case in CASES if case.id in ("key-not-matching-certificate", "misspelt-section")],
    ids=lambda case: case.id,
)
def test_a_plain_start_refuses_the_same_settings(folder, case):
    path = write_settings(folder, case.change)
    result = run_agent(path)
    assert result.returncode == 2, result.stderr
    assert f"{path}: {case.named} " in result.stderr, result.stderr


def test_every_problem_of_the_connection_is_listed_at_once(folder):
    def change(parser: configparser.ConfigParser, folder: Path) -> None:
        set_value("connection", "root_ca", garbage("garbage-ca.pem"))(parser, folder)
        set_value("connection", "private_key", lambda f: str(f / "things" / "thing-2.key"))(
            parser, folder
        )

    result = run_agent(write_settings(folder, change), "--check-config")
    assert result.returncode == 2
    assert "[connection] root_ca:" in result.stderr
    assert "[connection] private_key:" in result.stderr


def test_a_key_replaced_while_running_is_named_when_connecting_fails(folder):
    settings = load_settings(write_settings(folder))
    assert jobs_agent.explain_connection_failure(settings) is None
    shutil.copy(folder / "things" / "thing-2.key", folder / "things" / "thing-1.key")
    explanation = jobs_agent.explain_connection_failure(settings)
    assert explanation.startswith(f"{settings.path}: [connection] private_key: ")
    assert "does not belong to the certificate" in explanation


@pytest.mark.parametrize(
    ("called_as", "program"),
    [("/usr/bin/iot-jobs-agent", "iot-jobs-agent"), ("./jobs_agent.py", "jobs_agent.py")],
)
def test_version_names_the_program_the_operator_ran(monkeypatch, capsys, called_as, program):
    from agent.version import __version__

    monkeypatch.setattr(sys, "argv", [called_as, "--version"])
    with pytest.raises(SystemExit) as exited:
        jobs_agent.parse_args(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"{program} {__version__}"
