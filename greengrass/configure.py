"""Write the agent's settings file from the Greengrass component's configuration.

Run by lifecycle.sh install (recipe.yaml) with the configuration in environment variables:
AGENT_ALLOWED_PACKAGES, AGENT_CLIENT_ID, AGENT_ENDPOINT (empty: AGENT_NUCLEUS_ENDPOINT, the
nucleus's iotDataEndpoint), AGENT_CERTIFICATE, AGENT_PRIVATE_KEY, AGENT_ROOT_CA, and
AWS_IOT_THING_NAME, which the nucleus sets. The file says ``greengrass = yes``, so the agent
never takes a client id the nucleus uses. A settings file this component did not write is
left alone, and the step fails saying so.

    python3 configure.py /etc/iot-jobs-agent/settings.conf

Exit status: 0 written, 2 a value is missing or unusable, or the file is not this component's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, Mapping

MARK = "# Written by the Greengrass component com.example.IotJobsAgent"


class ConfigurationError(Exception):
    """A configuration value cannot go into the settings file."""


def _value(environ: Mapping[str, str], name: str, *, required: bool = True) -> str:
    value = environ.get(name, "").strip()
    if any(ord(char) < 32 for char in value):
        raise ConfigurationError(f"{name}: control characters are not allowed: {value!r}")
    if required and not value:
        raise ConfigurationError(f"{name}: missing or empty")
    return value


def settings_text(environ: Mapping[str, str]) -> str:
    """The settings file for the configuration in ``environ``; raises ConfigurationError."""
    endpoint = _value(environ, "AGENT_ENDPOINT", required=False) or _value(
        environ, "AGENT_NUCLEUS_ENDPOINT"
    )
    sections: Dict[str, Dict[str, str]] = {
        "connection": {
            "endpoint": endpoint,
            "thing_name": _value(environ, "AWS_IOT_THING_NAME"),
            "client_id": _value(environ, "AGENT_CLIENT_ID", required=False),
            "greengrass": "yes",
            "root_ca": _value(environ, "AGENT_ROOT_CA"),
            "certificate": _value(environ, "AGENT_CERTIFICATE"),
            "private_key": _value(environ, "AGENT_PRIVATE_KEY"),
        },
        "apt": {"allowed_packages": _value(environ, "AGENT_ALLOWED_PACKAGES", required=False)},
    }
    lines = [MARK + "; change the component's configuration, not this file."]
    for name, values in sections.items():
        lines.append(f"\n[{name}]")
        lines += [f"{key} = {value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def write_settings(path: Path, environ: Mapping[str, str]) -> None:
    """Write the settings file at ``path`` (mode 0600) unless another hand wrote it."""
    if path.exists() and not path.read_text(encoding="utf-8", errors="replace").startswith(MARK):
        raise ConfigurationError(
            f"{path} was not written by this component; move it away (the component writes "
            "the settings from its configuration) and deploy again"
        )
    text = settings_text(environ)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.replace(tmp, path)


def main(argv: list) -> int:
    if len(argv) != 2:
        print("usage: configure.py SETTINGS_FILE", file=sys.stderr)
        return 2
    try:
        write_settings(Path(argv[1]), os.environ)
    except ConfigurationError as error:
        print(f"configure.py: {error}", file=sys.stderr)
        return 2
    print(f"configure.py: wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
