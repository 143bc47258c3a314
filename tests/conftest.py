"""Shared fixtures.  Lab-backed tests fail (never skip) when the lab is not up."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests import lab


@pytest.fixture(scope="session")
def lab_info() -> dict[str, Any]:
    return lab.info()


@pytest.fixture
def unique() -> str:
    """A short unique token for names, so reruns and parallel stacks never collide."""
    return uuidlib.uuid4().hex[:6]


@pytest.fixture
def sweep() -> Iterator[list[tuple[str, str]]]:
    """Register (host, domain name) pairs; whatever a failed test left on the lab is removed after it."""
    made: list[tuple[str, str]] = []
    yield made
    for host, name in made:
        lab.virsh(host, "destroy", name, check=False)
        lab.virsh(host, "undefine", name, "--nvram", check=False)
