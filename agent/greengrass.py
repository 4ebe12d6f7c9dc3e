"""The agent on an AWS IoT Greengrass core device: find the installation, and the MQTT client
ids its nucleus connects with, so that the agent never uses one (pure but for reading files).

AWS IoT keeps one connection per client id and drops the older one when a second connects
with the same id; an agent using the nucleus's id would knock it offline and be knocked off in
turn, for ever. What the nucleus uses (sources in docs/greengrass.md):

- Greengrass v2 (Java nucleus): the thing name, then ``<thing>#2``, ``<thing>#3``... as
  subscriptions grow, and ``<thing>#endpoint-switch``;
- Greengrass Lite: the thing name (iotcored);
- Greengrass v1: the thing name, and ``<thing>-c00`` to ``<thing>-c05`` (the spooler).

So on a core device the agent's client id must not be the thing name, start with
``<thing>#``, or be ``<thing>-c`` and two digits. Its default there is ``<thing>-jobs-agent``,
which still starts with the thing name, as AWS's minimal core device policy requires
(``iot:Connect`` on ``client/<thing>*``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

CLIENT_ID_SUFFIX = "-jobs-agent"
MAX_CLIENT_ID_LENGTH = 128  # AWS IoT's limit

# Where each runtime leaves its mark, relative to the system root.
V2_ROOT = Path("greengrass/v2")
V2_CONFIG = V2_ROOT / "config" / "effectiveConfig.yaml"
LITE_MARKS = (
    Path("etc/greengrass/config.yaml"),
    Path("var/lib/greengrass/config.db"),
    Path("etc/systemd/system/greengrass-lite.target"),
    Path("lib/systemd/system/greengrass-lite.target"),
    Path("usr/lib/systemd/system/greengrass-lite.target"),
)
LITE_CONFIG = Path("etc/greengrass/config.yaml")
V1_CONFIG = Path("greengrass/config/config.json")

# `thingName: "x"` under `system:`, in the YAML both v2 and Lite write (read without a YAML
# library: the agent has none, and only this one scalar is needed).
_THING_NAME_LINE = re.compile(r"""^\s+thingName:\s*["']?([A-Za-z0-9:_-]{1,128})["']?\s*$""")


@dataclass(frozen=True)
class GreengrassCore:
    """A Greengrass installation: which runtime, its thing name when readable, and the file
    that showed it."""

    runtime: str  # "Greengrass v2 nucleus", "Greengrass Lite", "Greengrass v1 core"
    thing_name: Optional[str]
    found: Path


def detect(root: Path = Path("/")) -> Optional[GreengrassCore]:
    """The Greengrass installation under ``root``, or None when there is none."""
    if (root / V2_ROOT).is_dir():
        return GreengrassCore(
            "Greengrass v2 nucleus", _yaml_thing_name(root / V2_CONFIG), root / V2_ROOT
        )
    for mark in LITE_MARKS:
        if (root / mark).exists():
            thing_name = _yaml_thing_name(root / LITE_CONFIG)
            return GreengrassCore("Greengrass Lite", thing_name, root / mark)
    if (root / V1_CONFIG).is_file():
        thing_name = _v1_thing_name(root / V1_CONFIG)
        return GreengrassCore("Greengrass v1 core", thing_name, root / V1_CONFIG)
    return None


def _yaml_thing_name(path: Path) -> Optional[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    in_system = False
    for line in lines:
        if line and not line[0].isspace():
            in_system = line.rstrip() == "system:"
            continue
        found = _THING_NAME_LINE.match(line) if in_system else None
        if found:
            return found.group(1)
    return None


def _v1_thing_name(path: Path) -> Optional[str]:
    try:
        arn = json.loads(path.read_text(encoding="utf-8"))["coreThing"]["thingArn"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(arn, str) or ":thing/" not in arn:
        return None
    return arn.rsplit(":thing/", 1)[1] or None


def nucleus_uses(client_id: str, core_thing: str) -> bool:
    """Whether a Greengrass nucleus of thing ``core_thing`` may connect with ``client_id``."""
    return (
        client_id == core_thing
        or client_id.startswith(core_thing + "#")
        or re.fullmatch(re.escape(core_thing) + r"-c\d\d", client_id) is not None
    )


def default_client_id(core_thing: str) -> str:
    """The agent's client id on the core device of ``core_thing``."""
    return core_thing + CLIENT_ID_SUFFIX
