"""Cluster maps and changed extents on real sparse files."""

from __future__ import annotations

import hashlib
import os
import struct

import pytest

from providers.local import delta
from tests.unit.files import write_sparse

pytestmark = pytest.mark.unit


def test_map_of_holes_equals_map_of_zeros(tmp_path) -> None:
    sparse, dense = tmp_path / "s", tmp_path / "d"
    write_sparse(sparse, 1 << 20, {})
    dense.write_bytes(bytes(1 << 20))
    assert delta.compute(str(sparse)) == delta.compute(str(dense))


def test_data_starting_mid_cluster_and_odd_sizes(tmp_path) -> None:
    """Data that begins inside a cluster after a hole (4 KiB holes) must not stall the scan."""
    size = (3 << 20) + 123
    a, b = tmp_path / "a", tmp_path / "b"
    write_sparse(a, size, {(64 << 10) + 4096: os.urandom(4096), size - 50: b"x" * 50})
    write_sparse(b, size, {(64 << 10) + 4096: os.urandom(4096), size - 50: b"x" * 50})
    ma, mb = delta.compute(str(a)), delta.compute(str(b))
    assert delta.changed_extents(ma, mb, merge_gap=0) == [(64 << 10, 64 << 10)]
    assert delta.changed_extents(ma, ma) == []


def test_changed_extents_merge_and_compare_sizes(tmp_path) -> None:
    size = 4 << 20
    base = {i << 16: os.urandom(1024) for i in range(0, 64)}
    a, b = tmp_path / "a", tmp_path / "b"
    write_sparse(a, size, base)
    write_sparse(b, size, {**base, 0: os.urandom(10), 2 << 16: os.urandom(10), 40 << 16: os.urandom(10)})
    ma, mb = delta.compute(str(a)), delta.compute(str(b))
    assert delta.changed_extents(ma, mb, merge_gap=0) == [(0, 1 << 16), (2 << 16, 1 << 16), (40 << 16, 1 << 16)]
    assert delta.changed_extents(ma, mb, merge_gap=1 << 17) == [(0, 3 << 16), (40 << 16, 1 << 16)]
    c = tmp_path / "c"
    write_sparse(c, size + 1, {})
    assert delta.changed_extents(ma, delta.compute(str(c))) is None


def test_remember_caches_by_digest(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(delta, "CACHE_DIR", str(tmp_path / "cache"))
    f = tmp_path / "img"
    write_sparse(f, 1 << 20, {0: b"abc"})
    m = delta.remember("d" * 64, str(f))
    assert delta.load("d" * 64) == m
    f.write_bytes(b"changed")  # the cache answers by digest, without reading the file again
    assert delta.remember("d" * 64, str(f)) == m


def _reference_digest(data: bytes) -> str:
    """The digest's definition, written out plainly: sha256 over (cluster size, file size, the sha256 of
    every 64 KiB cluster of the bytes)."""
    head = struct.pack(">QQ", 64 << 10, len(data))
    clusters = b"".join(hashlib.sha256(data[i:i + (64 << 10)]).digest() for i in range(0, len(data), 64 << 10))
    return hashlib.sha256(head + clusters).hexdigest()


@pytest.mark.parametrize("workers", [1, 2, 3, 7])
def test_digest_follows_its_definition_whatever_the_split(tmp_path, workers: int) -> None:
    size = (5 << 20) + 4097  # parts and the short last cluster do not line up with anything
    f = tmp_path / "img"
    write_sparse(f, size, {100: os.urandom(200_000), (2 << 20) - 10: os.urandom(20), size - 3: b"end"})
    assert delta.digest(delta.compute(str(f), workers=workers)) == _reference_digest(f.read_bytes())


def test_digest_is_the_content_not_the_allocation_and_sees_one_byte(tmp_path) -> None:
    sparse, dense = tmp_path / "s", tmp_path / "d"
    write_sparse(sparse, 2 << 20, {70_000: b"x"})
    dense.write_bytes(sparse.read_bytes())  # the same bytes, every zero written
    d = delta.digest(delta.compute(str(sparse)))
    assert d == delta.digest(delta.compute(str(dense)))
    write_sparse(dense, 2 << 20, {(1 << 20) + 5: b"\x01"})
    assert delta.digest(delta.compute(str(dense))) != d


def test_the_host_side_check_is_the_same_source_run_alone(tmp_path) -> None:
    """What a host runs (`python3 -c SOURCE PATH SIZE`, nothing of virtfleet importable) prints the
    same digest, and refuses a file of another size."""
    import subprocess
    import sys

    from providers.hostside import clustermap
    from providers.remote import transfer

    img = tmp_path / "img"
    write_sparse(img, (3 << 20) + 4097, {5: os.urandom(70000), 2 << 20: b"\1" * 3})
    size = os.path.getsize(img)

    def host(path, n):
        return subprocess.run([sys.executable, "-I", "-c", transfer.CLUSTERMAP_SOURCE, str(path), str(n)],
                              capture_output=True, text=True, cwd=tmp_path)

    ran = host(img, size)
    assert (ran.returncode, ran.stdout.strip()) == (0, delta.digest(delta.compute(str(img))))
    wrong = host(img, size - 1)
    assert (wrong.returncode, wrong.stdout.strip()) == (3, f"size {size}")
    assert clustermap.main(["-c", str(img), str(size)]) == 0
