"""Fixtures shared by the provider tests: the lab's base image on h1 and a fresh disk from it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from providers.base_image import BaseImageProvider
from providers.host import HostProvider
from providers.volume import VolumeProvider
from tests.provider.fixtures import host_props, image_props, volume_props


@pytest.fixture(scope="module")
def base() -> Iterator[dict]:
    HostProvider().create(host_props("h1"))
    outs = BaseImageProvider().create(image_props("h1")).outs
    yield outs
    BaseImageProvider().delete("base", outs)  # let go of it: it goes with the last disk made from it


@pytest.fixture
def disk(base, unique):
    vp = VolumeProvider()
    made = vp.create(volume_props("h1", f"g-{unique}.qcow2", base))
    yield made.outs["path"]
    vp.delete(made.id, made.outs)
