"""Cluster maps and digests of image files, and the extents that differ between two of them (local I/O).

A cluster map is one sha256 per 64 KiB cluster of an image file, after a header with the cluster and
file size.  An image's digest, its content address, is the sha256 of its cluster map: one pass over the
image gives both, the pass is split across threads (hashlib releases the GIL), and holes cost nothing
(a cluster of zeros always hashes the same).  Maps are kept in a local cache by digest, so when an image
is rebuilt, the map of the previous image (already on a host as a base volume) is still known and only
the clusters that changed need to be sent.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading

from .sparse import extents

CLUSTER = 64 << 10
DIGEST = 32
HEADER = struct.Struct(">QQ")  # cluster size, file size
READ = 4 << 20
CACHE_DIR = os.path.expanduser(os.environ.get("VIRTFLEET_CLUSTER_CACHE", "~/.cache/virtfleet/clusters"))
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_ZERO = hashlib.sha256(bytes(CLUSTER)).digest()


def _hash_range(path: str, lo: int, hi: int, out: bytearray) -> None:
    """Hash the data clusters of [lo, hi) (cluster aligned) into `out`; holes keep the zero hash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        for is_data, offset, length in extents(fd, hi):
            if not is_data or offset + length <= lo:
                continue
            pos = max(lo, offset // CLUSTER * CLUSTER)  # whole clusters around the data
            end = min(hi, -(-(offset + length) // CLUSTER) * CLUSTER)
            while pos < end:
                buf = os.pread(fd, min(READ, end - pos), pos)
                if not buf:
                    break
                view = memoryview(buf)
                for j in range(0, len(buf), CLUSTER):
                    i = (pos + j) // CLUSTER
                    out[i * DIGEST:(i + 1) * DIGEST] = hashlib.sha256(view[j:j + CLUSTER]).digest()
                pos += len(buf)
    finally:
        os.close(fd)


def compute(path: str, workers: int = 2) -> bytes:
    """The cluster map of a file, hashed by `workers` threads over contiguous parts; holes are not read."""
    size = os.path.getsize(path)
    n = -(-size // CLUSTER)
    out = bytearray(_ZERO * n)
    if size % CLUSTER:  # the short last cluster hashes its real length
        out[(n - 1) * DIGEST:] = hashlib.sha256(bytes(size % CLUSTER)).digest()
    part = -(-n // max(1, workers)) * CLUSTER
    threads = [threading.Thread(target=_hash_range, args=(path, lo, min(size, lo + part), out))
               for lo in range(0, size, part)] if size else []
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return HEADER.pack(CLUSTER, size) + bytes(out)


def digest(cluster_map: bytes) -> str:
    """The image's content address: sha256 of its cluster map (hex)."""
    return hashlib.sha256(cluster_map).hexdigest()


def _cache_path(image_digest: str) -> str:
    return os.path.join(CACHE_DIR, f"{image_digest}.map")


def remember(image_digest: str, path: str) -> bytes:
    """The map of an image by its digest, computed once (even with many hosts in parallel) and cached."""
    with _locks_guard:
        lock = _locks.setdefault(image_digest, threading.Lock())
    with lock:
        cached = load(image_digest)
        if cached is not None:
            return cached
        return store(image_digest, compute(path))


def store(image_digest: str, data: bytes) -> bytes:
    try:
        os.makedirs(CACHE_DIR, exist_ok=True)
        tmp = f"{_cache_path(image_digest)}.{os.getpid()}.{threading.get_ident()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, _cache_path(image_digest))
    except OSError:
        pass  # the cache only saves bytes on the next rebuild
    return data


def load(image_digest: str) -> bytes | None:
    try:
        with open(_cache_path(image_digest), "rb") as f:
            return f.read()
    except OSError:
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
