"""Cluster maps and content digests of image files, from the standard library alone.

A cluster map is one sha256 per 64 KiB cluster of an image, after a header with the cluster and image
size.  An image's digest, its content address, is the sha256 of its cluster map.  One pass gives both;
it is split across threads over contiguous parts (hashlib releases the GIL), and holes are never read
(a cluster of zeros always hashes the same), found with SEEK_DATA/SEEK_HOLE.

This file imports nothing of virtfleet: the same source runs on a host (`python3 -c SOURCE PATH SIZE`)
to check an upload against the digest it is published under, reading only the data the host stores.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import sys
import threading

CLUSTER = 64 << 10
DIGEST = 32
HEADER = struct.Struct(">QQ")  # cluster size, image size
READ = 4 << 20
ZERO = hashlib.sha256(bytes(CLUSTER)).digest()


def extents(fd, size):
    """(is_data, offset, length) runs covering [0, size) of an open file (a block device is all data)."""
    pos = 0
    while pos < size:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            data = size
        if data > pos:
            yield False, pos, min(data, size) - pos
            pos = data
            continue
        try:
            hole = min(os.lseek(fd, pos, os.SEEK_HOLE), size)  # from the data itself: a hole start answers itself
        except OSError:
            hole = size
        yield True, pos, hole - pos
        pos = hole


def _hash_range(path, lo, hi, out):
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


def compute(path, workers=2, size=None):
    """The cluster map of the first `size` bytes of a file (all of it by default), by `workers` threads."""
    if size is None:
        size = os.path.getsize(path)
    n = -(-size // CLUSTER)
    out = bytearray(ZERO * n)
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


def digest(cluster_map):
    """The image's content address: sha256 of its cluster map (hex)."""
    return hashlib.sha256(cluster_map).hexdigest()


def main(argv):
    """On a host: print the digest of the first SIZE bytes of PATH; exit 3 when a file's size differs."""
    path, size = argv[1], int(argv[2])
    st = os.stat(path)
    if stat.S_ISREG(st.st_mode) and st.st_size != size:
        print(f"size {st.st_size}")
        return 3
    print(digest(compute(path, min(4, os.cpu_count() or 1), size)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
