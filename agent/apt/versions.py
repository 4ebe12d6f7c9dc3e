"""A job's versions before, kept across agent restarts (standard library only).

A job re-run after a crash (kill -9, a stop handed over while dpkg ran) finds its packages
already installed; reporting ``already-installed`` with the version this very job installed
would hide that the job changed the device. So before dpkg runs, the worker adds the versions
it found (name -> version, null: not installed) to ``<state_dir>/apt/<job id>.json``, keeping
what an earlier attempt wrote, and a re-run reports those. The handler deletes the file when it
returns (it keeps it when it hands the job over to the next start).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Dict, Optional

log = logging.getLogger(__name__)

FOLDER = "apt"


def versions_path(state_dir: Path, job_id: str) -> Path:
    """Where the versions before of ``job_id`` are kept."""
    name = re.sub(r"[^A-Za-z0-9_.:-]", "_", job_id)[:64] or "_"
    return Path(state_dir) / FOLDER / f"{name}.json"


def read_versions(path: Path) -> Dict[str, Optional[str]]:
    """The versions kept in ``path`` ({} when there is none, or it cannot be read)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        log.warning("ignoring %s: %s", path, error)
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        str(name): (version if isinstance(version, str) else None)
        for name, version in data.items()
    }


def add_versions(path: Path, versions: Dict[str, Optional[str]]) -> None:
    """Add ``versions`` to ``path``, an earlier attempt's entries winning; written to a new
    file, fsynced, renamed into place and the folder fsynced (a crash leaves the old file or
    the new one). Raises OSError."""
    kept = read_versions(path)
    merged = {**versions, **kept}
    if merged == kept and path.exists():
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".new")
    with open(temporary, "w") as stream:
        json.dump(merged, stream, sort_keys=True)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def forget_versions(path: Path) -> None:
    """Delete the kept versions (the job is over)."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as error:
        log.warning("cannot delete %s: %s", path, error)
