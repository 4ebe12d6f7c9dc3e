"""Shared fixtures: the local AWS IoT Jobs stack (real mosquitto, real service process)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from local_jobs.stack import LocalStack  # noqa: E402


@pytest.fixture
def stack_factory(tmp_path) -> Iterator[Callable[..., LocalStack]]:
    """``stack_factory(things=[...], minute_seconds=1.0, **kwargs)``: a started LocalStack.

    Every stack made is stopped when the test ends.
    """
    made: List[LocalStack] = []

    def make(things=("thing-1",), minute_seconds: float = 1.0, **kwargs) -> LocalStack:
        directory = tmp_path / f"stack-{len(made)}"
        stack = LocalStack(directory, things=list(things), minute_seconds=minute_seconds, **kwargs)
        made.append(stack)
        return stack.start()

    yield make
    for stack in made:
        stack.stop()


@pytest.fixture
def stack(stack_factory) -> LocalStack:
    """A started LocalStack with one thing, ``thing-1``, where a service minute is 1 second."""
    return stack_factory()
