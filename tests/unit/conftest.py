"""Fixtures of the unit tier."""

from __future__ import annotations

from collections.abc import Iterator

import libvirt
import pytest


@pytest.fixture
def test_driver() -> Iterator[libvirt.virConnect]:
    """libvirt's in-process `test:///default` driver: a fresh in-memory host per open, errors not printed."""
    libvirt.registerErrorHandler(lambda *_: None, None)
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()
