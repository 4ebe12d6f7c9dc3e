"""The system tier: Debian guests booted with systemd (systemd-nspawn), the agent installed
from its Debian package, jobs from the local Jobs service on the host.

Runs alone with ``python -m pytest -p no:xdist -m system tests/system`` (run-tests.sh does
when it can); skipped, with the reason, without root and CAP_SYS_ADMIN or systemd-nspawn, and
under xdist (one guest per module, scenarios in order). Built once per session: the package of
the checkout's version and of a next version (the self-update), the local Jobs service.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Iterator, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from device import Device, build_agent_deb, scenario_packages  # noqa: E402
from guest import Guest, make_root, system_tier_unavailable  # noqa: E402

from agent.version import __version__  # noqa: E402
from local_jobs.stack import LocalStack  # noqa: E402

HERE = Path(__file__).resolve().parent
NEXT_VERSION = __version__ + "+systest1"


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "system: boots Debian guests with systemd (tests/system)")
    config.addinivalue_line(
        "markers",
        "defect(what): pins the issue 10 defect named in `what` (fails without its fix)",
    )


def _skip_reason() -> Optional[str]:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return ("the system tier runs without xdist (python -m pytest -p no:xdist "
                "tests/system): one booted guest per module, scenarios in order")
    return system_tier_unavailable()


def pytest_collection_modifyitems(config, items) -> None:
    reason = _skip_reason()
    for item in items:
        if HERE not in Path(str(item.fspath)).resolve().parents:
            continue
        item.add_marker(pytest.mark.system)
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"system tier skipped: {reason}"))


@pytest.fixture(scope="session")
def agent_debs(tmp_path_factory) -> dict:
    """{version: .deb} for the checkout's version and NEXT_VERSION, built by build-deb.sh."""
    out = tmp_path_factory.mktemp("debs")
    return {version: build_agent_deb(version, out) for version in (__version__, NEXT_VERSION)}


@pytest.fixture(scope="session")
def jobs_stack(tmp_path_factory) -> Iterator[LocalStack]:
    """The local Jobs service on the host's loopback; a service minute is a real minute."""
    stack = LocalStack(tmp_path_factory.mktemp("stack"), things=["dev-1"], minute_seconds=60.0)
    stack.start()
    yield stack
    stack.stop()


def booted_device(release: str, tmp_path_factory, jobs_stack, agent_debs) -> Iterator[Device]:
    """A freshly extracted ``release`` root, booted, with the local repository published:
    the checkout's package (not installed yet) and the test packages."""
    folder = tmp_path_factory.mktemp(f"guest-{release}")
    root = make_root(release, folder / "root", hostname=f"systest-{release}")
    guest = Guest(root, folder / "console.log", machine=f"systest-{release}-{os.getpid()}")
    try:
        guest.boot()
        device = Device(guest, jobs_stack)
        device.publish([agent_debs[__version__]], scenario_packages())
        yield device
    finally:
        guest.shutdown()
        if guest.exit_status is not None:
            shutil.rmtree(root, ignore_errors=True)
