"""Edit a copy of a nested config dict at a key path (shared by the unit and e2e bad-input tables)."""

from __future__ import annotations

import copy

DELETE = object()  # as a value: remove the key instead of setting it


def with_value(raw: dict, path: str, value: object, sep: str = ".") -> dict:
    """A deep copy of `raw` with the key at `path` (keys joined by `sep`) set to `value` or deleted."""
    raw = copy.deepcopy(raw)
    keys = path.split(sep)
    node = raw
    for k in keys[:-1]:
        node = node[k]
    if value is DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return raw
