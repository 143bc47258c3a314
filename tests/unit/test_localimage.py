"""Local image digests: computed in the background with the cluster map, cached by file stamp; POSIX cksum."""

from __future__ import annotations

import os
import subprocess

import pytest

from providers.local import delta
from providers.local import image as localimage
from tests.unit.files import write_sparse
from tests.unit.test_delta import _reference_digest

pytestmark = pytest.mark.unit


@pytest.fixture
def caches(tmp_path, monkeypatch):
    monkeypatch.setattr(localimage, "CACHE", str(tmp_path / "digests.json"))
    monkeypatch.setattr(delta, "CACHE_DIR", str(tmp_path / "clusters"))
    monkeypatch.setattr(localimage, "VIEWS", str(tmp_path / "views"))
    return tmp_path


def _sparse(path, size: int, at: dict[int, bytes]) -> bytes:
    write_sparse(path, size, at)
    with open(path, "rb") as f:
        return f.read()


def test_background_digest_follows_its_definition_and_stores_the_cluster_map(caches) -> None:
    img = caches / "img.raw"
    whole = _sparse(img, 5 << 20, {100: os.urandom(70_000), 3 << 20: b"end"})
    future = localimage.digest_of(str(img))
    want = _reference_digest(whole)
    assert future.result(timeout=30) == want
    assert delta.load(want) == delta.compute(str(img))  # stored for a later delta


def test_cached_digest_is_known_at_once_and_a_changed_file_is_hashed_again(caches) -> None:
    img = caches / "img.raw"
    _sparse(img, 1 << 20, {0: b"a"})
    first = localimage.digest_of(str(img)).result(timeout=30)
    again = localimage.digest_of(str(img))
    assert again.done() and again.result() == first  # from the cache, no thread involved
    data = _sparse(img, 1 << 20, {0: b"b"})
    assert localimage.digest_of(str(img)).result(timeout=30) == _reference_digest(data) != first


def test_raw_qcow2_and_compressed_qcow2_of_one_disk_have_one_digest(caches) -> None:
    raw = caches / "disk.raw"
    _sparse(raw, 8 << 20, {0: b"boot" * 1000, 5 << 20: os.urandom(100_000)})
    for flags, name in (([], "plain.qcow2"), (["-c"], "packed.qcow2")):
        subprocess.run(["qemu-img", "convert", *flags, "-f", "raw", "-O", "qcow2", str(raw), str(caches / name)],
                       check=True)
    want = localimage.digest_of(str(raw)).result(timeout=30)
    for name in ("plain.qcow2", "packed.qcow2"):
        assert localimage.digest_of(str(caches / name), "qcow2").result(timeout=30) == want, name


def test_load_describes_the_image_with_its_digest(caches) -> None:
    img = caches / "img.raw"
    data = _sparse(img, 2 << 20, {4096: b"x" * 10})
    li = localimage.load("images.payload", str(img))
    assert (li.format, li.size, li.virtual_size) == ("raw", 2 << 20, 2 << 20)
    assert li.hexdigest == _reference_digest(data)


def test_posix_cksum_is_what_cksum_prints_for_the_same_bytes(caches) -> None:
    img = caches / "img.raw"
    _sparse(img, 3 << 20, {12345: os.urandom(5000)})
    with open(img, "rb") as f:
        expected = subprocess.run(["cksum"], stdin=f, capture_output=True, check=True).stdout.split()[0].decode()
    assert localimage.posix_cksum(str(img)) == expected
    _sparse(img, 3 << 20, {12345: os.urandom(5000)})  # a new stamp: computed again, not the cached value
    assert localimage.posix_cksum(str(img)) != expected
