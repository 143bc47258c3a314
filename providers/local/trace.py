"""Optional timing trace: with VIRTFLEET_TRACE=FILE, stamped lines appended to FILE (the benchmarks read it)."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any


def trace(event: str) -> None:
    """With VIRTFLEET_TRACE=FILE, append a wall-clock stamped line to FILE (benchmarks read it)."""
    path = os.environ.get("VIRTFLEET_TRACE")
    if path:
        with open(path, "a") as f:
            f.write(f"{time.time():.3f} {os.getpid()} {event}\n")


def _label(props: Any) -> str:
    if not isinstance(props, dict):
        return ""
    conn = props.get("connection")
    host = conn.get("host", "") if isinstance(conn, dict) else ""
    return f"{host}/{props.get('name') or props.get('image') or ''}"


def traced(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any) -> Any:
        first = args[-1] if name == "check" else args[0]
        label = first if isinstance(first, str) else _label(first)
        what = f"{type(self).__name__.removesuffix('Provider')}.{name} {label}"
        trace(f"begin {what}")
        try:
            return fn(self, *args)
        finally:
            trace(f"end {what}")
    return wrapper
