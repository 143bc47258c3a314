"""Cluster maps of image files and the extents that differ between two of them (local, pure I/O).

A cluster map is one 8-byte BLAKE2b digest per 64 KiB cluster of an image file.  Maps are kept in a
local cache by the file's sha256, so when an image is rebuilt, the map of the previous image (already
on a host as a base volume) is still known and only the clusters that changed need to be sent.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading

from .sparse import extents

CLUSTER = 64 << 10
DIGEST = 8
HEADER = struct.Struct(">QQ")  # cluster size, file size
CACHE_DIR = os.path.expanduser(os.environ.get("VIRTFLEET_CLUSTER_CACHE", "~/.cache/virtfleet/clusters"))
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_ZERO = hashlib.blake2b(bytes(CLUSTER), digest_size=DIGEST).digest()


def compute(path: str) -> bytes:
    """The cluster map of a file; holes are not read (their clusters hash as zeros)."""
    size = os.path.getsize(path)
    n = -(-size // CLUSTER)
    out = bytearray(_ZERO * n)
    if size % CLUSTER:  # the short last cluster hashes its real length
        out[(n - 1) * DIGEST:] = hashlib.blake2b(bytes(size % CLUSTER), digest_size=DIGEST).digest()
    fd = os.open(path, os.O_RDONLY)
    try:
        for is_data, offset, length in extents(fd, size):
            if not is_data:
                continue
            pos = offset // CLUSTER * CLUSTER  # whole clusters around the data
            end = min(size, -(-(offset + length) // CLUSTER) * CLUSTER)
            os.lseek(fd, pos, os.SEEK_SET)
            while pos < end:
                chunk = os.read(fd, min(CLUSTER, end - pos))
                if not chunk:
                    break
                i = pos // CLUSTER
                out[i * DIGEST:(i + 1) * DIGEST] = hashlib.blake2b(chunk, digest_size=DIGEST).digest()
                pos += len(chunk)
    finally:
        os.close(fd)
    return HEADER.pack(CLUSTER, size) + bytes(out)


def _cache_path(sha256: str) -> str:
    return os.path.join(CACHE_DIR, f"{sha256}.map")


def remember(sha256: str, path: str) -> bytes:
    """The map of an image by its digest, computed once (even with many hosts in parallel) and cached."""
    with _locks_guard:
        lock = _locks.setdefault(sha256, threading.Lock())
    with lock:
        cached = load(sha256)
        if cached is not None:
            return cached
        return store(sha256, compute(path))


def store(sha256: str, data: bytes) -> bytes:
    try:
        os.makedirs(CACHE_DIR, exist_ok=True)
        tmp = f"{_cache_path(sha256)}.{os.getpid()}.{threading.get_ident()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, _cache_path(sha256))
    except OSError:
        pass  # the cache only saves bytes on the next rebuild
    return data


def load(sha256: str) -> bytes | None:
    try:
        with open(_cache_path(sha256), "rb") as f:
            return f.read()
    except OSError:
        return None


def changed_extents(old: bytes, new: bytes, merge_gap: int = 1 << 20) -> list[tuple[int, int]] | None:
    """(offset, length) ranges of `new` that differ from `old`; None when the maps are not comparable.

    Ranges closer than `merge_gap` are merged: a few unchanged bytes cost less than another round trip.
    """
    oc, osize = HEADER.unpack_from(old)
    nc, nsize = HEADER.unpack_from(new)
    if oc != nc or osize != nsize:
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
