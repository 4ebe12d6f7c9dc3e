"""``[managed]``, ``[services]``, ``[reboot]``, ``[download]`` and ``[run_command]`` settings.

Every section may be left out; the defaults allow nothing: no service is allowed, reboot and
Run-Command are disabled, Download-File has no directory to write to. Install-Application and
Remove-Application follow ``[apt]`` (its ``allowed_packages``). Errors are SettingsError naming
the file, section and key (agent/settings.py converters).
"""

from __future__ import annotations

import configparser
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Tuple

from agent.errors import SettingsError
from agent.settings import (
    SETTINGS_KEYS,
    Settings,
    get_bool,
    get_float,
    get_int,
    get_list,
    get_path,
    get_str,
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
UNIT_PATTERN = re.compile(r"[A-Za-z0-9:_.\\@-]{1,256}")
USER_PATTERN = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?", re.IGNORECASE)


@dataclass(frozen=True)
class ServicesSettings:
    """``[services]``: Start/Stop/Restart-Application through systemd."""

    allowed: Tuple[str, ...] = ()  # unit names or globs (``nginx.service``, ``myapp-*``)
    systemctl: Tuple[str, ...] = ("systemctl",)
    timeout_seconds: float = 120.0
    agent_unit: str = "iot-jobs-agent.service"  # restarting it is done without waiting


@dataclass(frozen=True)
class RebootSettings:
    """``[reboot]``: the Reboot action."""

    enabled: bool = False
    command: Tuple[str, ...] = ("systemctl", "reboot")
    boot_id_file: Path = Path("/proc/sys/kernel/random/boot_id")
    wait_seconds: float = 600.0  # how long after the command the reboot must have begun


@dataclass(frozen=True)
class DownloadSettings:
    """``[download]``: the Download-File action (HTTPS only)."""

    directory: Optional[Path] = None  # None: Download-File is rejected
    max_bytes: int = 100 * 1024 * 1024
    ca_file: Optional[Path] = None  # extra CA certificates to trust, beside the system's
    allowed_hosts: Tuple[str, ...] = ()  # empty: any host
    timeout_seconds: float = 30.0  # per connection and per read
    retries: int = 3
    retry_delay_seconds: float = 2.0


@dataclass(frozen=True)
class RunCommandSettings:
    """``[run_command]``: the Run-Command action."""

    enabled: bool = False
    allowed_commands: Tuple[str, ...] = ()  # program names or absolute paths
    allowed_users: Tuple[str, ...] = ()  # users runAsUser may name, beside the agent's own
    search_path: str = DEFAULT_PATH


@dataclass(frozen=True)
class ManagedSettings:
    """Everything the managed-template handlers need."""

    state_dir: Path
    step_timeout_seconds: float = 600.0
    services: ServicesSettings = ServicesSettings()
    reboot: RebootSettings = RebootSettings()
    download: DownloadSettings = DownloadSettings()
    run_command: RunCommandSettings = RunCommandSettings()


_KEYS = {  # declared with every other section's keys
    name: tuple(sorted(SETTINGS_KEYS[name]))
    for name in ("managed", "services", "reboot", "download", "run_command")
}


def _check_keys(settings: Settings, name: str) -> None:
    parser = settings.sections
    if not parser.has_section(name):
        return
    known = _KEYS[name]
    for key in sorted(set(parser[name]) - set(parser.defaults())):
        if key not in known:
            raise SettingsError(
                f"{settings.path}: [{name}] {key}: unknown key (known: {', '.join(known)})"
            )


def _command(
    section: configparser.SectionProxy, key: str, default: Tuple[str, ...], path: Path, needed: bool
) -> Tuple[str, ...]:
    """A command line as words (no shell); the program is looked up on PATH when it has no
    slash, and must exist when ``needed``."""
    words = tuple(get_list(section, key, default, path=path))
    program = words[0]
    if "/" not in program:
        found = shutil.which(program, path=DEFAULT_PATH)
        if found is None:
            if needed:
                raise SettingsError(
                    f"{path}: [{section.name}] {key}: "
                    f"program {program!r} not found in {DEFAULT_PATH}"
                )
            return words
        return (found,) + words[1:]
    if not Path(program).is_absolute():
        program = str(path.parent / program)
    if needed and not Path(program).is_file():
        raise SettingsError(f"{path}: [{section.name}] {key}: {program!r} is not a file")
    return (program,) + words[1:]


def _check_units(names: Iterable[str], path: Path) -> None:
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9:_.\\@*?\[\]-]{1,256}", name) or name.startswith("-"):
            raise SettingsError(f"{path}: [services] allowed: {name!r} is not a unit name or glob")


def load_managed_settings(settings: Settings) -> ManagedSettings:
    """Read the managed-template sections of ``settings``. Raises SettingsError."""
    path = settings.path
    for name in _KEYS:
        _check_keys(settings, name)

    managed = settings.section("managed")
    step_timeout = get_float(
        managed, "step_timeout_seconds", 600.0, path=path, minimum=1, maximum=7 * 86400
    )

    section = settings.section("services")
    allowed = get_list(section, "allowed", (), path=path)
    _check_units(allowed, path)
    agent_unit = get_str(section, "agent_unit", ServicesSettings.agent_unit, path=path)
    if agent_unit and not UNIT_PATTERN.fullmatch(agent_unit):
        raise SettingsError(f"{path}: [services] agent_unit: {agent_unit!r} is not a unit name")
    services = ServicesSettings(
        allowed=allowed,
        systemctl=_command(section, "systemctl", ("systemctl",), path, needed=bool(allowed)),
        timeout_seconds=get_float(
            section, "timeout_seconds", 120.0, path=path, minimum=1, maximum=86400
        ),
        agent_unit=agent_unit,
    )

    section = settings.section("reboot")
    enabled = get_bool(section, "enabled", False, path=path)
    reboot = RebootSettings(
        enabled=enabled,
        command=_command(section, "command", RebootSettings.command, path, needed=enabled),
        boot_id_file=get_path(
            section, "boot_id_file", RebootSettings.boot_id_file, path=path, must_exist=enabled
        ),
        wait_seconds=get_float(section, "wait_seconds", 600.0, path=path, minimum=1, maximum=86400),
    )

    section = settings.section("download")
    directory = get_path(section, "directory", None, path=path, must_exist=False)
    download = DownloadSettings(
        directory=directory,
        max_bytes=get_int(section, "max_bytes", DownloadSettings.max_bytes, path=path, minimum=1),
        ca_file=get_path(section, "ca_file", None, path=path, must_exist=True),
        allowed_hosts=tuple(
            host.lower() for host in get_list(section, "allowed_hosts", (), path=path)
        ),
        timeout_seconds=get_float(
            section, "timeout_seconds", 30.0, path=path, minimum=0.1, maximum=3600
        ),
        retries=get_int(section, "retries", 3, path=path, minimum=0, maximum=100),
        retry_delay_seconds=get_float(
            section, "retry_delay_seconds", 2.0, path=path, minimum=0, maximum=3600
        ),
    )

    section = settings.section("run_command")
    users = get_list(section, "allowed_users", (), path=path)
    for user in users:
        if not USER_PATTERN.fullmatch(user):
            raise SettingsError(f"{path}: [run_command] allowed_users: {user!r} is not a user name")
    run_command = RunCommandSettings(
        enabled=get_bool(section, "enabled", False, path=path),
        allowed_commands=get_list(section, "allowed_commands", (), path=path),
        allowed_users=users,
        search_path=get_str(section, "path", DEFAULT_PATH, path=path) or DEFAULT_PATH,
    )
    return ManagedSettings(
        state_dir=settings.agent.state_dir,
        step_timeout_seconds=step_timeout,
        services=services,
        reboot=reboot,
        download=download,
        run_command=run_command,
    )
