"""Size parsing: 4, "4", "4GiB", "512MiB", "1.5G" -> bytes.  Bare numbers are in the given default unit."""

from __future__ import annotations

import math
import re

_UNITS = {
    "": None, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000**2,
    "mib": 1 << 20, "g": 1 << 30, "gb": 1000**3, "gib": 1 << 30, "t": 1 << 40, "tb": 1000**4,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(value: object, default_unit: int = 1 << 30) -> int:
    """Bytes for a size value; raises ValueError with the accepted forms when it cannot be read."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean, not a size")
    if isinstance(value, (int, float)):
        number, unit = float(value), default_unit
    elif isinstance(value, str) and (m := _SIZE.fullmatch(value)):
        number = float(m.group(1))
        factor = _UNITS.get(m.group(2).lower(), 0)
        if factor == 0:
            raise ValueError(f"unknown unit {m.group(2)!r} in {value!r}")
        unit = factor or default_unit
    else:
        raise ValueError(f"{value!r} is not a size (use a number of GiB, or e.g. \"4GiB\", \"512MiB\")")
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    if number < 0:
        raise ValueError(f"{value!r} is negative")
    return int(number * unit)


def human(n: int) -> str:
    """A short binary-unit rendering of a byte count."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.4g} {unit}"
    return f"{n} B"
