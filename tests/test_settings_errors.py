"""Every settings key missing, empty, of the wrong type or out of range, every named path missing,
not a file or unreadable, and a settings file that cannot be read at all: ``jobs_agent.py
--check-config`` and a plain start both exit 2 at once with a message naming the file, the
section and the key. The agent is run as a process, exactly as systemd or start.sh runs it.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional

import pytest
from stack_helpers import run_jobs_agent

from local_jobs.certificates import ensure_certificates

REPO = Path(__file__).resolve().parent.parent
# Root reads every file whatever its mode. An "unreadable" case runs the agent as root without
# the two capabilities that bypass file permissions, so a mode-000 file is refused to it exactly as
# to any other account, while a checkout below /root (mode 700, owned by root) stays reachable.
FILE_CAPABILITIES = "-dac_override,-dac_read_search"
WITHOUT_FILE_CAPABILITIES = [
    "setpriv",
    f"--bounding-set={FILE_CAPABILITIES}",
    f"--inh-caps={FILE_CAPABILITIES}",
]
pytestmark = pytest.mark.timeout(60)


class Case(NamedTuple):
    id: str
    section: Optional[str]  # None: the message names only the file
    key: Optional[str]
    change: Callable[[configparser.ConfigParser, Path], None]
    without_override: bool = False  # the agent runs without the capabilities that bypass file modes


def set_value(section: str, key: str, value: str):
    def change(parser: configparser.ConfigParser, folder: Path) -> None:
        if not parser.has_section(section):
            parser.add_section(section)
        parser.set(section, key, value)

    return change


def remove(section: str, key: str):
    def change(parser: configparser.ConfigParser, folder: Path) -> None:
        parser.remove_option(section, key)

    return change


def point_at(section: str, key: str, make: Callable[[Path], Path]):
    def change(parser: configparser.ConfigParser, folder: Path) -> None:
        parser.set(section, key, str(make(folder)))

    return change


def missing_path(folder: Path) -> Path:
    return folder / "no-such-file.pem"


def a_folder(folder: Path) -> Path:
    made = folder / "a-folder"
    made.mkdir(exist_ok=True)
    return made


def unreadable(name: str):
    def make(folder: Path) -> Path:
        path = folder / "certs" / name
        os.chmod(path, 0)
        return path

    return make


def key_open_to_others(folder: Path) -> Path:
    path = folder / "certs" / "thing-1.key"
    os.chmod(path, 0o644)
    return path


def cases() -> List[Case]:
    found: List[Case] = []

    def add(section, key, what, change, without_override=False):
        found.append(Case(f"{section}.{key}-{what}", section, key, change, without_override))

    for key in ("endpoint", "thing_name", "root_ca", "certificate", "private_key"):
        add("connection", key, "missing", remove("connection", key))
        add("connection", key, "empty", set_value("connection", key, ""))
    add("connection", "endpoint", "with-a-scheme", set_value("connection", "endpoint", "mqtts://x"))
    for bad in ("abc", "0", "70000", "8883.5"):
        add("connection", "port", f"is-{bad}", set_value("connection", "port", bad))
    for bad in ("bad name", "thing/../x", "t" * 129):
        add(
            "connection", "thing_name", f"is-{bad[:12]}", set_value("connection", "thing_name", bad)
        )
    files = {"root_ca": "ca.crt", "certificate": "thing-1.crt", "private_key": "thing-1.key"}
    for key, name in files.items():
        add("connection", key, "does-not-exist", point_at("connection", key, missing_path))
        add("connection", key, "is-a-folder", point_at("connection", key, a_folder))
        add("connection", key, "unreadable", point_at("connection", key, unreadable(name)), True)
    add(
        "connection",
        "private_key",
        "open-to-others",
        point_at("connection", "private_key", key_open_to_others),
    )
    add("connection", "port_number", "unknown-key", set_value("connection", "port_number", "1"))

    agent_bad = {
        "log_level": ["LOUD", "3"],
        "step_timeout_minutes": ["abc", "0", "10081", "1.5"],
        "heartbeat_seconds": ["abc", "0", "451", "nan"],
        "shutdown_grace_seconds": ["soon", "-1", "inf"],
        "progress_interval_seconds": ["x", "-0.5"],
        "watchdog_offline_seconds": ["0", "never"],
    }
    for key, values in agent_bad.items():
        for bad in values:
            add("agent", key, f"is-{bad}", set_value("agent", key, bad))
    add(
        "agent",
        "step_timeout_minute",
        "unknown-key",
        set_value("agent", "step_timeout_minute", "5"),
    )

    apt_bad = {
        "root_dir": ["/no/such/root"],
        "allowed_packages": ["cowsay; rm -rf /", "Upper_Case"],
        "lock_timeout_seconds": ["forever", "-1"],
        "lists_max_age_minutes": ["daily"],
        "job_timeout_seconds": ["0", "one hour"],
        "min_free_space_mb": ["1.5", "-1", "lots"],
    }
    for key, values in apt_bad.items():
        for bad in values:
            add("apt", key, f"is-{bad[:12]}", set_value("apt", key, bad))
    add(
        "apt",
        "root_dir",
        "is-a-file",
        point_at("apt", "root_dir", lambda f: f / "certs" / "ca.crt"),
    )
    add("apt", "allow_packages", "unknown-key", set_value("apt", "allow_packages", "cowsay"))
    return found


CASES = cases()
# A plain start runs the same checks; it is tried on one case of each kind (each run costs a
# Python start-up).
START_CASES = [
    c
    for c in CASES
    if c.id
    in {
        "connection.endpoint-missing",
        "connection.port-is-abc",
        "connection.root_ca-does-not-exist",
        "connection.private_key-unreadable",
        "connection.private_key-open-to-others",
        "agent.step_timeout_minutes-is-0",
        "apt.root_dir-is-/no/such/roo",
        "apt.allowed_packages-is-Upper_Case",
    }
]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    ensure_certificates(folder, ["thing-1"])
    return folder


@pytest.fixture
def folder(certificates) -> Path:
    """A folder of its own holding a copy of the certificates."""
    made = Path(tempfile.mkdtemp(prefix="settings-errors-"))
    shutil.copytree(certificates, made / "certs")
    yield made
    shutil.rmtree(made, ignore_errors=True)


def valid_settings(folder: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict(
        {
            "connection": {
                "endpoint": "localhost",
                "port": "8883",
                "thing_name": "thing-1",
                "client_id": "thing-1",
                "root_ca": str(folder / "certs" / "ca.crt"),
                "certificate": str(folder / "certs" / "things" / "thing-1.crt"),
                "private_key": str(folder / "certs" / "things" / "thing-1.key"),
            },
            "agent": {"state_dir": str(folder / "state"), "step_timeout_minutes": "15"},
            "apt": {"allowed_packages": "cowsay", "root_dir": ""},
        }
    )
    return parser


def write(parser: configparser.ConfigParser, path: Path) -> Path:
    with open(path, "w") as stream:
        parser.write(stream)
    return path


def without_file_capabilities() -> List[str]:
    """The command prefix under which a mode-000 file is unreadable to this test's children."""
    if os.geteuid() != 0:
        return []  # permissions already apply
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run root without CAP_DAC_OVERRIDE")
    return WITHOUT_FILE_CAPABILITIES


def run_agent(
    path: Path, *args: str, without_override: bool = False
) -> subprocess.CompletedProcess:
    prefix = without_file_capabilities() if without_override else []
    try:
        return run_jobs_agent("-c", str(path), *args, prefix=prefix, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"jobs_agent.py {' '.join(args)} did not exit: the bad setting was accepted")


def fix_certificate_layout(folder: Path) -> None:
    # the certificate set keeps thing files under things/; unreadable() names them flat
    for name in ("thing-1.crt", "thing-1.key"):
        link = folder / "certs" / name
        if not link.exists():
            os.link(folder / "certs" / "things" / name, link)


@pytest.mark.parametrize("owner", [0, 65534], ids=["root-owned", "other-owned"])
def test_a_mode_000_file_is_unreadable_to_the_agent_of_an_unreadable_case(folder, owner):
    # what every "unreadable" case relies on: the agent really is refused the file
    path = folder / "secret"
    path.write_text("secret\n")
    os.chown(path, owner, owner)
    os.chmod(path, 0)
    result = subprocess.run(
        [*without_file_capabilities(), sys.executable, "-c", f"open({str(path)!r}).read()"],
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    assert result.returncode == 1 and "PermissionError" in result.stderr, result.stderr


def test_the_valid_settings_of_this_table_pass(folder):
    path = write(valid_settings(folder), folder / "settings.conf")
    result = run_agent(path, "--check-config")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "case, mode",
    [(c, "check-config") for c in CASES] + [(c, "start") for c in START_CASES],
    ids=[f"{c.id}-check-config" for c in CASES] + [f"{c.id}-start" for c in START_CASES],
)
def test_a_bad_setting_stops_the_agent_naming_file_section_and_key(folder, case, mode):
    fix_certificate_layout(folder)
    parser = valid_settings(folder)
    case.change(parser, folder)
    path = write(parser, folder / "settings.conf")
    args = ["--check-config"] if mode == "check-config" else []
    result = run_agent(path, *args, without_override=case.without_override)
    assert result.returncode == 2, result.stderr
    assert f"{path}: [{case.section}] {case.key}:" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def settings_file_cases():
    def missing(folder: Path) -> Path:
        return folder / "absent.conf"

    def folder_instead(folder: Path) -> Path:
        return a_folder(folder)

    def not_utf8(folder: Path) -> Path:
        path = folder / "latin1.conf"
        path.write_bytes("[connection]\nendpoint = caf\xe9\n".encode("latin-1"))
        return path

    def no_section(folder: Path) -> Path:
        path = folder / "flat.conf"
        path.write_text("endpoint = localhost\n")
        return path

    def no_connection(folder: Path) -> Path:
        path = folder / "agent-only.conf"
        path.write_text("[agent]\nlog_level = INFO\n")
        return path

    def duplicate_key(folder: Path) -> Path:
        path = write(valid_settings(folder), folder / "dup-key.conf")
        text = path.read_text().replace(
            "[agent]\n", "[agent]\nlog_level = INFO\nlog_level = DEBUG\n"
        )
        path.write_text(text)
        return path

    def duplicate_section(folder: Path) -> Path:
        path = write(valid_settings(folder), folder / "dup-section.conf")
        path.write_text(path.read_text() + "\n[agent]\nlog_level = INFO\n")
        return path

    def empty(folder: Path) -> Path:
        path = folder / "empty.conf"
        path.write_text("")
        return path

    def unreadable_file(folder: Path) -> Path:
        path = write(valid_settings(folder), folder / "secret.conf")
        os.chmod(path, 0)
        return path

    return [
        ("missing", missing, False),
        ("a-folder", folder_instead, False),
        ("not-utf8", not_utf8, False),
        ("no-section-header", no_section, False),
        ("no-connection-section", no_connection, False),
        ("duplicate-key", duplicate_key, False),
        ("duplicate-section", duplicate_section, False),
        ("empty", empty, False),
        ("unreadable", unreadable_file, True),
    ]


FILE_CASES = settings_file_cases()
FILE_START_CASES = [c for c in FILE_CASES if c[0] in ("missing", "unreadable", "no-section-header")]


@pytest.mark.parametrize(
    "name, make, without_override, mode",
    [(*c, "check-config") for c in FILE_CASES] + [(*c, "start") for c in FILE_START_CASES],
    ids=[f"{c[0]}-check-config" for c in FILE_CASES] + [f"{c[0]}-start" for c in FILE_START_CASES],
)
def test_a_bad_settings_file_stops_the_agent_naming_it(folder, name, make, without_override, mode):
    path = make(folder)
    args = ["--check-config"] if mode == "check-config" else []
    result = run_agent(path, *args, without_override=without_override)
    assert result.returncode == 2, result.stderr
    assert f"{path}:" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def unmakeable_state_dir(folder: Path) -> Path:
    parser = valid_settings(folder)
    (folder / "a-file").write_text("not a folder")
    parser.set("agent", "state_dir", str(folder / "a-file" / "state"))
    return write(parser, folder / "settings.conf")


def test_check_config_refuses_a_state_dir_that_cannot_be_made(folder):
    path = unmakeable_state_dir(folder)
    result = run_agent(path, "--check-config")
    assert result.returncode == 2, result.stdout
    assert f"{path}: [agent] state_dir:" in result.stderr, result.stderr


def test_start_names_file_section_and_key_of_a_state_dir_that_cannot_be_made(folder):
    path = unmakeable_state_dir(folder)
    result = run_agent(path)
    assert result.returncode == 2, result.stderr
    assert f"{path}: [agent] state_dir:" in result.stderr, result.stderr
