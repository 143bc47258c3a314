"""Cluster maps of images kept by digest, and the extents that differ between two of them (local I/O).

The map and digest themselves are computed by `clustermap` (one pass, holes never read).  Maps are kept
in a local cache by digest, so when an image is rebuilt, the map of the previous image (already on a
host as a base volume) is still known and only the clusters that changed need to be sent.
"""

from __future__ import annotations

import os
import threading

from .clustermap import CLUSTER, DIGEST, HEADER, compute, digest

__all__ = ["CLUSTER", "DIGEST", "HEADER", "changed_extents", "compute", "digest", "load", "remember", "store"]

CACHE_DIR = os.path.expanduser(os.environ.get("VIRTFLEET_CLUSTER_CACHE", "~/.cache/virtfleet/clusters"))
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


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
