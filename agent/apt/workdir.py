"""The APT worker's own folder (``apt-worker-*`` in the temporary folder), standard library only.

The worker keeps dpkg's logs there and removes it at its end. A worker that is killed (a job
over its time limit, a power cut) cannot, so each worker holds an exclusive ``flock`` on a file
in its folder for as long as it lives, and the next worker removes the folders whose lock is
free. A folder whose worker still runs (an orphan of the previous agent, left running by
``KillMode=process`` to finish dpkg) is locked and kept.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

log = logging.getLogger("agent.apt.worker")

PREFIX = "apt-worker-"
LOCK_NAME = "worker.lock"
# A folder without a lock file is being made this instant, or was left by an older agent.
UNLOCKED_GRACE_SECONDS = 600.0


@contextmanager
def work_dir(parent: Optional[str] = None) -> Iterator[Path]:
    """A new folder for this worker, locked while it lives and removed at its end; stale
    folders of killed workers are removed first."""
    remove_stale(parent)
    # Made under a hidden name and locked before it gets the name other workers look for.
    hidden = Path(tempfile.mkdtemp(prefix="." + PREFIX, dir=parent))
    folder = hidden.with_name(hidden.name[1:])
    descriptor = os.open(hidden / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        os.rename(hidden, folder)
        yield folder
    finally:
        shutil.rmtree(folder if folder.exists() else hidden, ignore_errors=True)
        os.close(descriptor)


def remove_stale(parent: Optional[str] = None) -> List[Path]:
    """Remove the worker folders (of this user) whose worker is gone; returns them."""
    removed = []
    for folder in Path(parent or tempfile.gettempdir()).glob(PREFIX + "*"):
        try:
            info = os.lstat(folder)
        except OSError:
            continue
        if not folder.is_dir() or folder.is_symlink() or info.st_uid != os.geteuid():
            continue
        if _stale(folder, info.st_mtime):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        log.info("removed the folders of %d killed apt worker(s)", len(removed))
    return removed


def _stale(folder: Path, mtime: float) -> bool:
    try:
        descriptor = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return time.time() - mtime > UNLOCKED_GRACE_SECONDS
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: its worker still runs
        return False
    finally:
        os.close(descriptor)  # also releases a lock just taken
    return True
