"""Sparse files: the data and hole runs of a local file, from SEEK_DATA/SEEK_HOLE (holes are never read)."""

from __future__ import annotations

import os
from collections.abc import Iterator


def extents(fd: int, size: int) -> Iterator[tuple[bool, int, int]]:
    """(is_data, offset, length) runs covering [0, size) of an open file."""
    pos = 0
    while pos < size:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            data = size
        if data > pos:
            yield False, pos, data - pos
            pos = data
            continue
        try:
            hole = min(os.lseek(fd, pos, os.SEEK_HOLE), size)  # from the data itself: a hole start answers itself
        except OSError:
            hole = size
        yield True, pos, hole - pos
        pos = hole
