"""What a rebuilt image must send: block indexes of images kept by digest, and upload plans (local I/O).

An image's digest is computed by `clustermap` over the disk the guest sees (`localimage` gives that as
a raw file).  Beside it, each image has a block index: a short hash of every 4 KiB block of data (a file
system's block size; zero blocks left out), kept in a local cache by digest.  An upload then sends only
the blocks found in none of the bases already on the host, wherever they sit in those bases, and copies
the rest there (`plan`).  The 64 KiB cluster maps remain for the hosts without python3
(`changed_extents`, same offsets only).
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from providers.hostside.clustermap import CLUSTER, DIGEST, HEADER, MAX_DATA, compute, digest, extents

__all__ = ["CLUSTER", "DIGEST", "HEADER", "changed_extents", "compute", "digest", "load", "remember", "store"]

BLOCK = 4096
ENTRY = struct.Struct("<Q16s")  # offset, blake2b-128 of the 4 KiB block there
_ZERO_BLOCK = hashlib.blake2b(bytes(BLOCK), digest_size=16).digest()

CACHE_DIR = os.path.expanduser(os.environ.get("VIRTFLEET_CLUSTER_CACHE", "~/.cache/virtfleet/clusters"))
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def _cache_path(image_digest: str, kind: str = "map") -> str:
    """Where the cache keeps a digest's map or index; a digest read from a host's volume names is data:
    anything but 64 hex digits names no file."""
    if not HEX_DIGEST.fullmatch(image_digest):
        raise ValueError(f"not a content digest: {image_digest[:80]!r}")
    return os.path.join(CACHE_DIR, f"{image_digest}.{kind}")


def remember(image_digest: str, path: str) -> bytes:
    """The map of an image by its digest, computed once (even with many hosts in parallel) and cached,
    with its block index."""
    with _locks_guard:
        lock = _locks.setdefault(image_digest, threading.Lock())
    with lock:
        if load_index(image_digest) is None:
            store_index(image_digest, block_index(path))
        cached = load(image_digest)
        if cached is not None:
            return cached
        return store(image_digest, compute(path))


def remember_index(image_digest: str, path: str) -> bytes:
    """The block index of an image by its digest (computed once, with its map, and cached)."""
    remember(image_digest, path)
    return load_index(image_digest) or block_index(path)


def store(image_digest: str, data: bytes) -> bytes:
    _write(_cache_path(image_digest), data)
    return data


def load(image_digest: str) -> bytes | None:
    try:
        with open(_cache_path(image_digest), "rb") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def changed_extents(old: bytes, new: bytes, merge_gap: int = 1 << 20) -> list[tuple[int, int]] | None:
    """(offset, length) ranges of `new` that differ from `old`; None when the maps are not comparable.

    Ranges closer than `merge_gap` are merged: a few unchanged bytes cost less than another round trip.
    """
    oc, osize = HEADER.unpack_from(old)
    nc, nsize = HEADER.unpack_from(new)
    if oc != nc or osize != nsize or len(old) != len(new):
        return None
    extents: list[list[int]] = []
    body_o, body_n = old[HEADER.size:], new[HEADER.size:]
    for i in range(len(body_n) // DIGEST):
        if body_o[i * DIGEST:(i + 1) * DIGEST] == body_n[i * DIGEST:(i + 1) * DIGEST]:
            continue
        start, end = i * nc, min(nsize, (i + 1) * nc)
        if extents and start - extents[-1][1] <= merge_gap:
            extents[-1][1] = end
        else:
            extents.append([start, end])
    return [(s, e - s) for s, e in extents]


def _index_range(path: str, lo: int, hi: int, out: list[bytes]) -> None:
    fd = os.open(path, os.O_RDONLY)
    entries = bytearray()
    try:
        for is_data, offset, length in extents(fd, hi, lo):
            if not is_data:
                continue
            pos, end = offset // BLOCK * BLOCK, min(hi, -(-(offset + length) // BLOCK) * BLOCK)
            while pos < end:
                buf = os.pread(fd, min(4 << 20, end - pos), pos)
                if not buf:
                    break
                view = memoryview(buf)
                for j in range(0, len(buf), BLOCK):
                    h = hashlib.blake2b(view[j:j + BLOCK], digest_size=16).digest()
                    if h != _ZERO_BLOCK:
                        entries += ENTRY.pack(pos + j, h)
                pos += len(buf)
    finally:
        os.close(fd)
    out.append(bytes(entries))


def block_index(path: str, workers: int = 2) -> bytes:
    """The block index of a raw image: (offset, hash) of each 4 KiB data block that is not all zeros, in
    offset order (`workers` threads over contiguous parts; hashlib releases the GIL)."""
    size = os.path.getsize(path)
    part = -(-size // max(1, workers) // BLOCK) * BLOCK or BLOCK
    parts: list[list[bytes]] = [[] for _ in range(0, size, part)]
    threads = [threading.Thread(target=_index_range, args=(path, lo, min(size, lo + part), parts[n]))
               for n, lo in enumerate(range(0, size, part))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return b"".join(p[0] for p in parts if p)


def store_index(image_digest: str, index: bytes) -> None:
    _write(_cache_path(image_digest, "idx"), index)


def load_index(image_digest: str) -> bytes | None:
    try:
        with open(_cache_path(image_digest, "idx"), "rb") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def entries(index: bytes) -> Iterator[tuple[int, bytes]]:
    return ENTRY.iter_unpack(index)  # type: ignore[return-value]


@dataclass(frozen=True)
class Op:
    """One step of an upload: `length` bytes at `offset`, sent (`source` -1) or copied from the host's
    base number `source` at `source_offset`."""

    offset: int
    length: int
    source: int = -1
    source_offset: int = 0


@dataclass(frozen=True)
class Plan:
    ops: tuple[Op, ...]
    sources: tuple[int, ...]  # which of the candidate bases the copies read, in the order the host opens them
    literal: int              # bytes of the image found in no base: what is sent (before compression)
    copied: int               # bytes copied from the bases on the host


def plan(index: bytes, bases: list[bytes]) -> Plan:
    """How to make the image of `index` on a host that has the images of `bases` (their block indexes):
    each data block found in a base is copied from there (the first base that has it), every other one
    sent; neighbouring blocks merge into one operation.  Ops are in increasing offset order."""
    where: dict[bytes, tuple[int, int]] = {}
    for n, base in enumerate(bases):
        for offset, h in entries(base):
            where.setdefault(h, (n, offset))
    ops: list[list[int]] = []
    literal = copied = 0
    for offset, h in entries(index):
        src, src_off = where.get(h, (-1, 0))
        last = ops[-1] if ops else None
        if last is not None and last[0] + last[1] == offset and last[2] == src and \
                (src >= 0 and last[3] + last[1] == src_off or src < 0 and last[1] + BLOCK <= MAX_DATA):
            last[1] += BLOCK
        else:
            ops.append([offset, BLOCK, src, src_off])
        if src < 0:
            literal += BLOCK
        else:
            copied += BLOCK
    used = sorted({o[2] for o in ops if o[2] >= 0})
    renumber = {n: i for i, n in enumerate(used)}
    return Plan(tuple(Op(o[0], o[1], renumber.get(o[2], -1), o[3]) for o in ops), tuple(used), literal, copied)


def _write(path: str, data: bytes) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        pass  # the cache only saves bytes on the next rebuild
