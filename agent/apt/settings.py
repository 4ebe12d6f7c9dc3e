"""``[apt]`` settings of the APT_UPDATE handler, loaded once into a frozen value."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from agent.errors import SettingsError
from agent.settings import SETTINGS_KEYS, Settings, get_float, get_int, get_list, get_path

SECTION = "apt"
ALLOWED_PATTERN = re.compile(r"[a-z0-9+.*?\[\]!-]+(:[a-z0-9*?-]+)?")
KNOWN_KEYS = SETTINGS_KEYS[SECTION]  # declared with every other section's keys


@dataclass(frozen=True)
class AptSettings:
    """``[apt]``: where apt works and what a job may do.

    ``root_dir`` None means the real system; ``allowed_packages`` are glob patterns matched
    against requested package names (empty: every job is rejected). ``state_dir`` is the
    agent's ``[agent] state_dir`` (a job's first versions before are kept there across
    restarts); None keeps nothing.
    """

    root_dir: Optional[Path] = None
    allowed_packages: Tuple[str, ...] = ()
    lock_timeout_seconds: float = 300.0
    lists_max_age_minutes: float = 1440.0
    job_timeout_seconds: float = 3600.0
    min_free_space_mb: int = 50
    state_dir: Optional[Path] = None


def load_apt_settings(settings: Settings) -> AptSettings:
    """Read ``[apt]`` from ``settings``; a missing section gives the defaults.

    Raises SettingsError naming the file, section and key of a bad value (all of them, one a
    line).
    """
    section = settings.section(SECTION)
    path = settings.path
    problems = [
        f"{path}: [{SECTION}] {key}: unknown key (known: {', '.join(sorted(KNOWN_KEYS))})"
        for key in sorted(set(section) - set(settings.sections.defaults()) - KNOWN_KEYS)
    ]
    defaults = AptSettings()
    readers = {
        "root_dir": lambda: get_path(section, "root_dir", None, path=path, must_exist=True),
        "allowed_packages": lambda: get_list(section, "allowed_packages", (), path=path),
        "lock_timeout_seconds": lambda: get_float(
            section, "lock_timeout_seconds", defaults.lock_timeout_seconds, path=path, minimum=0
        ),
        "lists_max_age_minutes": lambda: get_float(
            section, "lists_max_age_minutes", defaults.lists_max_age_minutes, path=path, minimum=0
        ),
        "job_timeout_seconds": lambda: get_float(
            section, "job_timeout_seconds", defaults.job_timeout_seconds, path=path, minimum=1
        ),
        "min_free_space_mb": lambda: get_int(
            section, "min_free_space_mb", defaults.min_free_space_mb, path=path, minimum=0
        ),
    }
    values = {}
    for key, read in readers.items():
        try:
            values[key] = read()
        except SettingsError as error:
            problems.append(str(error))
    for pattern in values.get("allowed_packages", ()):
        if not ALLOWED_PATTERN.fullmatch(pattern):
            problems.append(
                f"{path}: [{SECTION}] allowed_packages: {pattern!r} is not a package name glob "
                "(a-z 0-9 + . - and the wildcards * ? [ ])"
            )
    root_dir = values.get("root_dir")
    if root_dir is not None and not root_dir.is_dir():
        problems.append(f"{path}: [{SECTION}] root_dir: {str(root_dir)!r} is not a folder")
    if problems:
        raise SettingsError("\n".join(problems))
    if root_dir is not None:
        values["root_dir"] = root_dir.resolve()
    if settings.agent is not None:
        values["state_dir"] = settings.agent.state_dir
    return AptSettings(**values)
