"""Files for the unit tests."""

from __future__ import annotations


def write_sparse(path, size: int, runs: dict[int, bytes]) -> None:
    """A file of `size` bytes that holds `runs` ({offset: data}) and holes everywhere else."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in runs.items():
            f.seek(offset)
            f.write(data)
