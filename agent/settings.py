"""Load the agent's INI settings once into frozen values, each checked.

Every error is a ``SettingsError`` whose message names the file, the section and the key:
``/etc/jobs-agent/settings.conf: [agent] step_timeout_minutes: expected a whole number, got 'x'``.
``[connection]`` and ``[agent]`` are parsed here; other sections (``[apt]``...) belong to their
handlers, which read ``Settings.section(name)`` with the converters below. Every section and
key the agent knows is declared once, in ``SETTINGS_KEYS``: anything else in the file is an
error, with a "did you mean" when a known name is close.
"""

from __future__ import annotations

import configparser
import difflib
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
)

from agent import greengrass
from agent.errors import SettingsError
from agent.tls import credential_problems

T = TypeVar("T")


class _Required:
    """Marker default: the key must be present and non-empty."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

THING_NAME_PATTERN = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
MIN_STEP_TIMEOUT_MINUTES = 1
MAX_STEP_TIMEOUT_MINUTES = 10080
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


@dataclass(frozen=True)
class ConnectionSettings:
    """``[connection]``: where the broker is and who this device is."""

    endpoint: str
    port: int
    thing_name: str
    client_id: str
    root_ca: Path
    certificate: Path
    private_key: Path
    # The Greengrass runtime on this device and its thing ("" when none): see agent/greengrass.py.
    greengrass: str = ""


@dataclass(frozen=True)
class AgentSettings:
    """``[agent]``: how the agent behaves."""

    state_dir: Path
    log_level: str = "INFO"
    step_timeout_minutes: int = 10
    heartbeat_seconds: float = 200.0
    shutdown_grace_seconds: float = 60.0
    progress_interval_seconds: float = 5.0
    watchdog_offline_seconds: float = 300.0


@dataclass(frozen=True)
class SecuritySettings:
    """``[security]``: whether job documents must be signed, and by which keys (the keys
    themselves are read by agent/signing.py)."""

    require_signed_documents: bool = False
    trusted_keys: Optional[Path] = None


@dataclass(frozen=True)
class Settings:
    """The whole settings file: checked ``[connection]``, ``[agent]`` and ``[security]``, raw
    other sections."""

    path: Path
    connection: ConnectionSettings
    agent: AgentSettings
    sections: configparser.ConfigParser = field(repr=False, compare=False)
    security: SecuritySettings = SecuritySettings()

    def section(self, name: str) -> configparser.SectionProxy:
        """The raw section ``name``; an empty one when the file has no such section."""
        return _section(self.sections, name)


def _section(parser: configparser.ConfigParser, name: str) -> configparser.SectionProxy:
    if parser.has_section(name):
        return parser[name]
    # An empty section of its own (with the file's [DEFAULT] values), so that reading,
    # iterating and ``in`` all work as for a section the file has.
    empty = configparser.ConfigParser(defaults=parser.defaults(), interpolation=None)
    empty.add_section(name)
    return empty[name]


def _where(path: Path, section: configparser.SectionProxy, key: str) -> str:
    return f"{path}: [{section.name}] {key}"


def _raw(section: configparser.SectionProxy, key: str, default: Any, path: Path) -> Optional[str]:
    """The stripped text of ``key``, or None when absent or empty and a default applies."""
    text = section.get(key, fallback=None)
    text = None if text is None else text.strip()
    if not text:
        if default is REQUIRED:
            what = "missing" if text is None else "empty"
            raise SettingsError(f"{_where(path, section, key)}: {what}; a value is required")
        return None
    return text


def _convert(
    section: configparser.SectionProxy,
    key: str,
    default: Any,
    path: Path,
    convert: Callable[[str], T],
    expected: str,
    minimum: Optional[float] = None,
    maximum: Optional[float] = None,
) -> T:
    text = _raw(section, key, default, path)
    if text is None:
        return default
    try:
        value = convert(text)
    except ValueError:
        raise SettingsError(
            f"{_where(path, section, key)}: expected {expected}, got {text!r}"
        ) from None
    if minimum is not None and value < minimum:
        raise SettingsError(
            f"{_where(path, section, key)}: must be at least {minimum}, got {text!r}"
        )
    if maximum is not None and value > maximum:
        raise SettingsError(
            f"{_where(path, section, key)}: must be at most {maximum}, got {text!r}"
        )
    return value


def get_str(
    section: configparser.SectionProxy, key: str, default: Any = REQUIRED, *, path: Path
) -> str:
    """The text of ``key`` with surrounding blanks removed; ``default`` when absent.

    A present but empty value is "" unless the key is REQUIRED. Raises SettingsError.
    """
    text = section.get(key, fallback=None)
    if text is None or default is REQUIRED:
        text = _raw(section, key, default, path)
        return default if text is None else text
    return text.strip()


def get_int(
    section: configparser.SectionProxy,
    key: str,
    default: Any = REQUIRED,
    *,
    path: Path,
    minimum: Optional[int] = None,
    maximum: Optional[int] = None,
) -> int:
    """A whole number within [minimum, maximum]; ``default`` when absent or empty.

    Raises SettingsError.
    """
    return _convert(section, key, default, path, int, "a whole number", minimum, maximum)


def get_float(
    section: configparser.SectionProxy,
    key: str,
    default: Any = REQUIRED,
    *,
    path: Path,
    minimum: Optional[float] = None,
    maximum: Optional[float] = None,
) -> float:
    """A number (seconds, usually) within [minimum, maximum]; ``default`` when absent or empty.

    Raises SettingsError.
    """

    def to_finite(text: str) -> float:
        value = float(text)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(text)
        return value

    return _convert(section, key, default, path, to_finite, "a number", minimum, maximum)


def get_bool(
    section: configparser.SectionProxy, key: str, default: Any = REQUIRED, *, path: Path
) -> bool:
    """yes/no, true/false, on/off or 1/0; ``default`` when absent or empty. Raises SettingsError."""

    def to_bool(text: str) -> bool:
        value = configparser.ConfigParser.BOOLEAN_STATES.get(text.lower())
        if value is None:
            raise ValueError(text)
        return value

    return _convert(section, key, default, path, to_bool, "yes or no")


def get_path(
    section: configparser.SectionProxy,
    key: str,
    default: Any = REQUIRED,
    *,
    path: Path,
    must_exist: bool = True,
) -> Path:
    """A path; a relative one is taken from the settings file's folder.

    ``default`` (returned as given, not resolved) when absent or empty. With ``must_exist`` the
    path must exist. Raises SettingsError.
    """
    text = _raw(section, key, default, path)
    if text is None:
        return default
    value = Path(text).expanduser()
    if not value.is_absolute():
        value = path.parent / value
    if must_exist and not value.exists():
        raise SettingsError(f"{_where(path, section, key)}: {str(value)!r} does not exist")
    return value


def get_list(
    section: configparser.SectionProxy, key: str, default: Any = REQUIRED, *, path: Path
) -> Tuple[str, ...]:
    """Words separated by commas and/or blanks (lines too); ``default`` when absent or empty.

    Raises SettingsError.
    """
    text = _raw(section, key, default, path)
    if text is None:
        return default
    return tuple(word for word in re.split(r"[\s,]+", text) if word)


def get_choice(
    section: configparser.SectionProxy,
    key: str,
    choices: Sequence[str],
    default: Any = REQUIRED,
    *,
    path: Path,
) -> str:
    """One of ``choices`` (case-insensitive, returned as spelled in ``choices``).

    Raises SettingsError.
    """
    by_folded = {choice.lower(): choice for choice in choices}

    def to_choice(text: str) -> str:
        return by_folded[text.lower()]

    try:
        return _convert(section, key, default, path, to_choice, "one of " + ", ".join(choices))
    except KeyError:
        text = section.get(key, "")
        raise SettingsError(
            f"{_where(path, section, key)}: expected one of {', '.join(choices)}, got {text!r}"
        ) from None


def check_readable_file(
    section: configparser.SectionProxy, key: str, value: Path, *, path: Path
) -> None:
    """Raise SettingsError unless ``value`` is a regular file this process can read."""
    where = _where(path, section, key)
    if not value.is_file():
        raise SettingsError(f"{where}: {str(value)!r} is not a file")
    try:
        with open(value, "rb") as stream:
            stream.read(1)
    except OSError as error:
        raise SettingsError(f"{where}: cannot read {str(value)!r}: {error.strerror}") from None


def check_folder_can_exist(
    section: configparser.SectionProxy, key: str, value: Path, *, path: Path
) -> None:
    """Raise SettingsError when ``value`` is not a folder, or cannot be made because a part of
    it is not a folder. Whether this user may write there is checked when the agent starts."""
    where = _where(path, section, key)
    if value.exists():
        if not value.is_dir():
            raise SettingsError(f"{where}: {str(value)!r} is not a folder")
        return
    for parent in value.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SettingsError(
                    f"{where}: {str(value)!r} cannot be made: {str(parent)!r} is not a folder"
                )
            return


def check_private_key_mode(
    section: configparser.SectionProxy, key: str, value: Path, *, path: Path
) -> None:
    """Raise SettingsError when the private key is readable or writable by group or others."""
    mode = stat.S_IMODE(os.stat(value).st_mode)
    if mode & 0o077:
        raise SettingsError(
            f"{_where(path, section, key)}: {str(value)!r} is open to group or others "
            f"(mode {mode:04o}); run: chmod 600 {value}"
        )


# Every section the agent reads and its keys, in one place: a section or key not named here
# is an error (a typo must not silently fall back to a default). A module that adds a
# section adds it here.
SETTINGS_KEYS: Dict[str, FrozenSet[str]] = {
    "connection": frozenset(
        (
            "endpoint",
            "port",
            "thing_name",
            "client_id",
            "greengrass",
            "root_ca",
            "certificate",
            "private_key",
        )
    ),
    "agent": frozenset(
        (
            "state_dir",
            "log_level",
            "step_timeout_minutes",
            "heartbeat_seconds",
            "shutdown_grace_seconds",
            "progress_interval_seconds",
            "watchdog_offline_seconds",
        )
    ),
    "apt": frozenset(
        (
            "root_dir",
            "allowed_packages",
            "lock_timeout_seconds",
            "lists_max_age_minutes",
            "job_timeout_seconds",
            "min_free_space_mb",
        )
    ),
    "managed": frozenset(("step_timeout_seconds",)),
    "services": frozenset(("allowed", "systemctl", "timeout_seconds", "agent_unit")),
    "reboot": frozenset(("enabled", "command", "boot_id_file", "wait_seconds")),
    "download": frozenset(
        (
            "directory",
            "max_bytes",
            "ca_file",
            "allowed_hosts",
            "timeout_seconds",
            "retries",
            "retry_delay_seconds",
        )
    ),
    "run_command": frozenset(("enabled", "allowed_commands", "allowed_users", "path")),
    "security": frozenset(("require_signed_documents", "trusted_keys")),
}
GREENGRASS_CHOICES = ("auto", "yes", "no")

# The endpoint of settings.conf.example and of the README: a file copied and not filled in.
PLACEHOLDER_ENDPOINT = re.compile(r"(x+|a1b2c3d4e5f6g7)-ats\.iot\.[a-z0-9-]+\.amazonaws\.com")


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_names(parser: configparser.ConfigParser, path: Path) -> List[str]:
    """A problem line for every section and key of ``parser`` that ``SETTINGS_KEYS`` lacks."""
    problems = []
    for name in parser.sections():
        known = SETTINGS_KEYS.get(name)
        if known is None:
            close = difflib.get_close_matches(name, sorted(SETTINGS_KEYS), n=1, cutoff=0.6)
            hint = f"; did you mean [{close[0]}]?" if close else ""
            sections = ", ".join(f"[{known_name}]" for known_name in sorted(SETTINGS_KEYS))
            problems.append(f"{path}: [{name}]: unknown section{hint} (known: {sections})")
            continue
        own = set(parser[name]) - set(parser.defaults())
        problems.extend(
            f"{path}: [{name}] {key}: unknown key{_did_you_mean(key, known)} "
            f"(known: {', '.join(sorted(known))})"
            for key in sorted(own - known)
        )
    return problems


def _collect(problems: List[str], read: Callable[[], T]) -> Optional[T]:
    try:
        return read()
    except SettingsError as error:
        problems.append(str(error))
        return None


def _read_parser(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as stream:
            parser.read_file(stream)
    except FileNotFoundError:
        raise SettingsError(f"{path}: settings file not found") from None
    except OSError as error:
        raise SettingsError(f"{path}: cannot read the settings file: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise SettingsError(f"{path}: not UTF-8 text ({error.reason})") from None
    except configparser.Error as error:
        message = " ".join(str(error).split())
        raise SettingsError(f"{path}: not a valid settings file: {message}") from None
    return parser


def _credential_file(section: configparser.SectionProxy, key: str, path: Path) -> Path:
    value = get_path(section, key, path=path)
    check_readable_file(section, key, value, path=path)
    if key == "private_key":
        check_private_key_mode(section, key, value, path=path)
    return value


def _load_connection(parser: configparser.ConfigParser, path: Path, problems: List[str]):
    section = parser["connection"]
    values: Dict[str, Any] = {}
    values["endpoint"] = _collect(problems, lambda: get_str(section, "endpoint", path=path))
    if values["endpoint"] and "://" in values["endpoint"]:
        problems.append(
            f"{_where(path, section, 'endpoint')}: expected a host name without a scheme, "
            f"got {values['endpoint']!r}"
        )
    values["port"] = _collect(
        problems, lambda: get_int(section, "port", 8883, path=path, minimum=1, maximum=65535)
    )
    thing_name = _collect(problems, lambda: get_str(section, "thing_name", path=path))
    if thing_name and not THING_NAME_PATTERN.fullmatch(thing_name):
        problems.append(
            f"{_where(path, section, 'thing_name')}: expected 1 to 128 of a-z A-Z 0-9 : _ -, "
            f"got {thing_name!r}"
        )
    values["thing_name"] = thing_name
    values["client_id"], values["greengrass"] = _client_id(section, thing_name, path, problems)
    for key in ("root_ca", "certificate", "private_key"):
        values[key] = _collect(problems, lambda key=key: _credential_file(section, key, path))
    if any(value is None for value in values.values()):
        return None
    return ConnectionSettings(**values)


def _client_id(
    section: configparser.SectionProxy, thing_name: Optional[str], path: Path, problems: List[str]
) -> Tuple[Optional[str], str]:
    """The client id to connect with, and the Greengrass core found ("" when none).

    On a Greengrass core device (found, or ``greengrass = yes``) the id must not be one the
    nucleus connects with (agent/greengrass.py); the default there is ``<thing>-jobs-agent``.
    """
    client_id = _collect(problems, lambda: get_str(section, "client_id", "", path=path))
    told = _collect(
        problems,
        lambda: get_choice(section, "greengrass", GREENGRASS_CHOICES, "auto", path=path),
    )
    if client_id is None or told is None or not thing_name:
        return None, ""
    # IOT_JOBS_AGENT_SYSTEM_ROOT: where to look for Greengrass instead of / (for tests).
    root = Path(os.environ.get("IOT_JOBS_AGENT_SYSTEM_ROOT") or "/")
    core = greengrass.detect(root) if told != "no" else None
    if core is None and told != "yes":
        return client_id or thing_name, ""
    core_thing = (core and core.thing_name) or thing_name
    runtime = (
        f"{core.runtime} (found {core.found})"
        if core
        else "Greengrass ([connection] greengrass = yes)"
    )
    where = _where(path, section, "client_id")
    if not client_id:
        client_id = thing_name
        if greengrass.nucleus_uses(client_id, core_thing):
            client_id = greengrass.default_client_id(thing_name)
        if len(client_id) > greengrass.MAX_CLIENT_ID_LENGTH:
            problems.append(
                f"{where}: this is a {runtime} core device of thing {core_thing!r}, and the "
                f"agent's default client id there, {client_id!r}, is longer than AWS IoT's "
                f"{greengrass.MAX_CLIENT_ID_LENGTH} characters; set client_id to another id "
                f"that starts with {core_thing!r}, not followed by '#' or '-c' and two digits"
            )
            return None, runtime
        return client_id, f"{runtime}, thing {core_thing}"
    if greengrass.nucleus_uses(client_id, core_thing):
        problems.append(
            f"{where}: {client_id!r} is a client id the Greengrass nucleus connects with on "
            f"this core device ({runtime}, thing {core_thing!r}); AWS IoT would drop one of "
            f"the two connections over and over. Set client_id = "
            f"{greengrass.default_client_id(core_thing)} (or leave it empty for that default)"
        )
        return None, runtime
    return client_id, f"{runtime}, thing {core_thing}"


def _load_agent(parser: configparser.ConfigParser, path: Path, problems: List[str]):
    section = _section(parser, "agent")
    d = AgentSettings(state_dir=path.parent / "state")

    def number(key: str, default: float, **bounds: float) -> Optional[float]:
        return _collect(problems, lambda: get_float(section, key, default, path=path, **bounds))

    def state_dir() -> Path:
        value = get_path(section, "state_dir", d.state_dir, path=path, must_exist=False)
        check_folder_can_exist(section, "state_dir", value, path=path)
        return value

    values: Dict[str, Any] = {
        "state_dir": _collect(problems, state_dir),
        "log_level": _collect(
            problems,
            lambda: get_choice(section, "log_level", LOG_LEVELS, d.log_level, path=path),
        ),
        "step_timeout_minutes": _collect(
            problems,
            lambda: get_int(
                section,
                "step_timeout_minutes",
                d.step_timeout_minutes,
                path=path,
                minimum=MIN_STEP_TIMEOUT_MINUTES,
                maximum=MAX_STEP_TIMEOUT_MINUTES,
            ),
        ),
        "shutdown_grace_seconds": number(
            "shutdown_grace_seconds", d.shutdown_grace_seconds, minimum=0
        ),
        "progress_interval_seconds": number(
            "progress_interval_seconds", d.progress_interval_seconds, minimum=0
        ),
        "watchdog_offline_seconds": number(
            "watchdog_offline_seconds", d.watchdog_offline_seconds, minimum=1
        ),
    }
    step_minutes = values["step_timeout_minutes"]
    if step_minutes is None:
        return None
    # A heartbeat every third of the step timeout leaves room for two lost ones.
    step_seconds = step_minutes * 60.0
    values["heartbeat_seconds"] = number(
        "heartbeat_seconds", step_seconds / 3, minimum=0.1, maximum=step_seconds / 2
    )
    if any(value is None for value in values.values()):
        return None
    return AgentSettings(**values)


def load_state_dir(path: Path) -> Path:
    """Only ``[agent] state_dir`` of the settings file at ``path`` (its default when absent),
    for tools that read the state directory and need no connection. Raises SettingsError."""
    path = Path(path)
    section = _section(_read_parser(path), "agent")
    return get_path(section, "state_dir", path.parent / "state", path=path, must_exist=False)


def _load_security(parser: configparser.ConfigParser, path: Path, problems: List[str]):
    section = _section(parser, "security")
    d = SecuritySettings()
    required = _collect(
        problems,
        lambda: get_bool(section, "require_signed_documents", d.require_signed_documents,
                         path=path),
    )
    trusted_keys = _collect(problems, lambda: get_path(section, "trusted_keys", None, path=path))
    if required is None or (trusted_keys is None and section.get("trusted_keys", "").strip()):
        return None
    return SecuritySettings(required, trusted_keys)


def load_settings(path: Path) -> Settings:
    """Read and check the settings file at ``path``.

    Raises SettingsError; when several values are wrong its message lists each on its own line.
    Files named by ``[connection]`` must be readable, and the private key closed to group and
    others.
    """
    path = Path(path)
    parser = _read_parser(path)
    problems: List[str] = []
    if not parser.has_section("connection"):
        raise SettingsError(f"{path}: [connection]: section missing")
    problems.extend(unknown_names(parser, path))
    connection = _load_connection(parser, path, problems)
    agent = _load_agent(parser, path, problems)
    security = _load_security(parser, path, problems)
    if problems or connection is None or agent is None or security is None:
        raise SettingsError("\n".join(problems))
    log = logging.getLogger(__name__)
    log.debug("settings loaded from %s", path)
    return Settings(
        path=path, connection=connection, agent=agent, sections=parser, security=security
    )


def connection_problems(settings: Settings) -> List[str]:
    """What AWS IoT and the TLS stack will refuse in ``[connection]``, one line each naming the
    file, the section and the key: the example's placeholder endpoint, a CA or certificate that
    does not parse, a private key that does not parse or does not belong to the certificate.

    Reads the files named (never raises); an empty list when nothing is wrong.
    """
    connection = settings.connection
    where = f"{settings.path}: [connection]"
    problems = []
    if PLACEHOLDER_ENDPOINT.fullmatch(connection.endpoint.lower()):
        problems.append(
            f"{where} endpoint: {connection.endpoint!r} is the example's placeholder; use your "
            f"account's endpoint: aws iot describe-endpoint --endpoint-type iot:Data-ATS"
        )
    problems.extend(
        f"{where} {key}: {reason}"
        for key, reason in credential_problems(
            connection.root_ca, connection.certificate, connection.private_key
        )
    )
    return problems
