"""Download-File: an HTTPS file (presigned S3 URLs included) into the configured directory.

Safety: HTTPS only, redirects too; the certificate is checked against the system's CAs plus
``[download] ca_file``; ``[download] allowed_hosts`` may limit the hosts. The target path must
lie inside ``[download] directory`` (no ``..``, no symlink leading out). The file is written to
``.<name>.part`` beside the target, checked (size limit, length, optional SHA-256 given as a
third argument ``sha256:<hex>``), flushed to disk and renamed over the target only when
complete, so the target is never half-written.

Network errors and 5xx answers are retried ``[download] retries`` times, resuming from what is
already on disk with a ``Range`` request. A presigned URL is new on every delivery of a job,
so the partial file remembers the URL without its query string (and the job id): a job handed
the same object with a fresh signature after an agent restart resumes the same partial file.
The full URL, signature included, is never logged. A download the agent's shutdown
interrupts keeps its partial file and hands the job over (JobHandedOver): the next start resumes
it; a download of a job the service canceled is deleted and fails.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, Optional
from urllib.parse import urlsplit

from agent.errors import JobFailed, JobRejected, UrlRefused
from agent.managed.document import Step, mask_url
from agent.managed.settings import DownloadSettings
from agent.managed.steps import NOT_ALLOWED, Action, StepOutcome, StepRun
from agent.process import User, current_user, lookup_user

SHA256 = re.compile(r"sha256:([0-9a-fA-F]{64})")
INVALID = "INVALID_DOCUMENT"


def resolve_target(directory: Path, file_path: str) -> Path:
    """The path ``file_path`` names inside ``directory`` (relative paths are taken from it).

    Raises ValueError naming the problem: empty, a NUL, a ``..`` part, a folder name, or a
    path outside ``directory``. Symlinks are checked when the file is written.
    """
    if not file_path or "\x00" in file_path:
        raise ValueError("the file path is empty or holds a NUL character")
    if file_path.endswith("/"):
        raise ValueError(f"{file_path!r} names a folder, not a file")
    parts = Path(file_path).parts
    if ".." in parts:
        raise ValueError(f"{file_path!r} holds a '..' part")
    base = Path(os.path.normpath(os.path.abspath(directory)))
    candidate = Path(file_path)
    target = Path(os.path.normpath(candidate if candidate.is_absolute() else base / candidate))
    if target == base or base not in target.parents:
        raise ValueError(f"{file_path!r} is not inside the download directory {base}")
    return target


class DownloadAction(Action):
    """The Download-File action."""

    name = "Download-File"
    own_user_only = False  # runAsUser: the finished file is handed to that account

    def __init__(self, settings: DownloadSettings) -> None:
        self._settings = settings

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() != "https" or not parts.hostname:
            raise UrlRefused(f"only https:// URLs are downloaded, got {mask_url(url)!r}")
        hosts = self._settings.allowed_hosts
        if hosts and not any(fnmatch.fnmatchcase(parts.hostname.lower(), h) for h in hosts):
            raise UrlRefused(
                f"host {parts.hostname!r} is not in [download] allowed_hosts ({', '.join(hosts)})"
            )

    def check(self, step: Step) -> Callable[[StepRun], StepOutcome]:
        settings = self._settings
        if settings.directory is None:
            raise JobRejected(
                f"{step.label}: downloads are disabled: set [download] directory", NOT_ALLOWED
            )
        if len(step.args) not in (2, 3):
            raise JobRejected(
                f"{step.label}: expected args [downloadUrl, filePath] (and optionally "
                f'"sha256:<hex>"), got {len(step.args)} values',
                INVALID,
            )
        url, file_path = step.args[0].strip(), step.args[1].strip()
        try:
            self._check_url(url)
        except (UrlRefused, ValueError) as error:
            raise JobRejected(f"{step.label}: {error}", NOT_ALLOWED) from None
        try:
            target = resolve_target(settings.directory, file_path)
        except ValueError as error:
            raise JobRejected(f"{step.label}: filePath: {error}", NOT_ALLOWED) from None
        digest: Optional[str] = None
        if len(step.args) == 3:
            found = SHA256.fullmatch(step.args[2].strip())
            if not found:
                raise JobRejected(
                    f'{step.label}: third argument must be "sha256:<64 hex digits>"', INVALID
                )
            digest = found.group(1).lower()
        owner = self._owner(step)
        return lambda run: self._run(run, url, target, digest, owner)

    def _owner(self, step: Step) -> Optional[User]:
        agent = current_user()
        name = step.run_as_user
        if not name or name == agent.name:
            return None
        user = lookup_user(name)
        if user is None:
            raise JobRejected(f"{step.label}: runAsUser {name!r}: no such user", NOT_ALLOWED)
        if agent.uid != 0:
            raise JobRejected(
                f"{step.label}: runAsUser {name!r}: the agent ({agent.name}) cannot give files "
                "to another user",
                NOT_ALLOWED,
            )
        return user

    # carrying it out

    def _prepare_folder(self, target: Path) -> None:
        """Make the target's folder inside the directory; refuse symlinks leading out."""
        base = Path(os.path.realpath(self._settings.directory))  # type: ignore[arg-type]
        if not base.is_dir():
            raise JobFailed(f"the download directory {base} does not exist", "DOWNLOAD_DIR")
        target.parent.mkdir(parents=True, exist_ok=True)
        real_parent = Path(os.path.realpath(target.parent))
        if real_parent != base and base not in real_parent.parents:
            raise JobRejected(
                f"{target} leads outside the download directory {base} (through a symlink)",
                NOT_ALLOWED,
            )
        if target.is_dir() and not target.is_symlink():
            raise JobFailed(f"{target} is a folder", "DOWNLOAD_FAILED")

    def _run(
        self,
        run: StepRun,
        url: str,
        target: Path,
        digest: Optional[str],
        owner: Optional[User],
    ) -> StepOutcome:
        self._prepare_folder(target)
        part = target.with_name(f".{target.name}.part")
        meta_path = target.with_name(f".{target.name}.part.json")
        identity = {"job": run.job.job_id, "url": mask_url(url)}
        resume_ok = run.job.attempt > 1 and _read_json(meta_path) == identity
        if not resume_ok:
            _remove(part)
        _write_json(meta_path, identity)
        # The HTTP machinery (urllib, http.client, email) is loaded only when a download runs:
        # an agent that never downloads does not keep it resident.
        from agent.managed import fetch

        opener = fetch.opener(self._settings, self._check_url)
        try:
            size = fetch.download(self._settings, run, opener, url, part, resume=resume_ok)
        except JobFailed:
            _remove(part)
            _remove(meta_path)
            raise
        sha256 = fetch.file_sha256(part)
        if digest is not None and sha256 != digest:
            _remove(part)
            _remove(meta_path)
            raise JobFailed(
                f"SHA-256 of the download is {sha256}, expected {digest}",
                "CHECKSUM_MISMATCH",
            )
        os.chmod(part, 0o644)
        if owner is not None:
            os.chown(part, owner.uid, owner.gid)
        os.replace(part, target)
        _fsync_dir(target.parent)
        _remove(meta_path)
        return StepOutcome(
            f"{size} bytes written to {target}",
            details={"file": str(target), "bytes": str(size), "sha256": sha256},
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value: Dict[str, str]) -> None:
    path.write_text(json.dumps(value, sort_keys=True), encoding="utf-8")


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
