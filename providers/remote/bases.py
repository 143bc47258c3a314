"""Holding base volumes on a host (`holders`, run there): hold, release, collect.  See `holders`."""

from __future__ import annotations

from pathlib import Path

from .. import holders
from ..spec import Connection
from . import session, transfer

_SOURCE = Path(holders.__file__).read_text()
_RUN = r"""
command -v "$4" >/dev/null 2>&1 || { echo untracked; exit 0; }
exec "$4" -c "$5" "$1" "$2" "$3"
"""


def act(c: Connection, op: str, base: str, holder: str = "") -> str:
    """`op` (hold, release, collect) on the host's base file `base`; returns the host's one-line answer:
    held, missing, removed, "kept held N", "kept used NAME", "kept pinned" or untracked (no python3 on
    the host, or no user extended attributes there: nothing is tracked)."""
    if base.startswith("/dev/"):
        return "untracked"  # an LV: no extended attributes
    _, out, _ = session.run(c, ["sh", "-c", _RUN, "sh", op, base, holder, transfer.HOST_PYTHON, _SOURCE])
    return out.strip()
