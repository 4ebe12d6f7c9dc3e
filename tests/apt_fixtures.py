"""APT test fixtures: real .deb packages in a local repository (built once per session), a
throwaway apt/dpkg root per test (a copy of a prepared template), and other processes holding
locks. Load them with ``pytest_plugins = ("apt_fixtures",)``; helpers are in apt_helpers.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest
from apt_helpers import PACKAGES, LockHolder

from local_jobs.apt_repo import AptRoot, Repository, build_repository, make_root


@pytest.fixture(scope="session")
def apt_repository(tmp_path_factory) -> Repository:
    """The session's repository of test packages (every version listed)."""
    return build_repository(tmp_path_factory.mktemp("apt-repo"), PACKAGES)


@pytest.fixture(scope="session")
def apt_template(tmp_path_factory, apt_repository) -> AptRoot:
    """A root with fresh package lists for the session repository (copy: downloads)."""
    root = make_root(
        tmp_path_factory.mktemp("apt-template") / "root",
        [apt_repository.sources_line(scheme="copy")],
    )
    root.refresh_lists()
    return root


@pytest.fixture
def apt_root(tmp_path, apt_template) -> AptRoot:
    """A fresh throwaway root for this test: nothing installed, lists fresh."""
    return apt_template.copy_to(tmp_path / "root")


@pytest.fixture
def lock_holder():
    """``lock_holder(path, seconds=120)``: a process holding ``path``; released at the end."""
    holders: List[LockHolder] = []

    def hold(path: Path, seconds: float = 120.0) -> LockHolder:
        holder = LockHolder(path, seconds)
        holders.append(holder)
        return holder

    yield hold
    for holder in holders:
        holder.release()
