"""Change tables and diffs, on normalised values, in pure functions.

For each resource: which property changes update in place, which need a guest restart, which replace.
The preview (`diff`) and the action (`update`) both read these tables, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from providers.model import fields
from providers.model.guest import GuestSpec
from providers.model.host import Connection, HostSpec
from providers.model.network import NetworkSpec
from providers.model.storage import BaseImageSpec, VolumeSpec


class Table(dict[str, "str | fields.Classify"]):
    """A change table: property -> "replace" | "restart" | "inplace" | "ignore" (or a function of the old
    and new values choosing one), with what a key missing from older state stands for (added after
    resources were created: no spurious change) and how a property's values compare (a connection by where
    it points)."""

    def __init__(self, changes: dict[str, str | fields.Classify], defaults: dict[str, Any] | None = None,
                 norms: dict[str, Callable[[Any], Any]] | None = None) -> None:
        super().__init__(changes)
        self.defaults = defaults or {}
        self.norms = {"connection": Connection.identity, **(norms or {})}

    @classmethod
    def of(cls, spec_type: type, **extra: str) -> Table:
        """The table of a spec class's declarations, plus keys that are not fields of the spec."""
        return cls({**fields.change_table(spec_type), **extra}, fields.defaults(spec_type), fields.norms(spec_type))

    def norm(self, key: str, value: Any) -> Any:
        if value is None:
            value = self.defaults.get(key)
        norm = self.norms.get(key)
        return norm(value) if norm is not None and value is not None else value

    def kind(self, key: str, old: Any, new: Any) -> str:
        """The change class of one property going from `old` to `new` (normalised values)."""
        kind = self[key]
        return kind if isinstance(kind, str) else kind(old, new)


# Each from its spec's field declarations; the guest has two keys that are not fields of its spec:
# the seed's content (secret; every change of it changes `seed`) and drift seen by read (redefine).
GUEST_TABLE = Table.of(GuestSpec, cloudInit="ignore", xmlDrift="inplace")
VOLUME_TABLE = Table.of(VolumeSpec)
HOST_TABLE = Table.of(HostSpec)
NETWORK_TABLE = Table.of(NetworkSpec)  # "restart": the network restarts, only while no running guest uses it
BASE_IMAGE_TABLE = Table.of(BaseImageSpec)


@dataclass
class Plan:
    changed: list[str] = field(default_factory=list)
    replaces: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        return bool(self.changed)


def plan(table: Table, olds: dict[str, Any], news: dict[str, Any]) -> Plan:
    """Compare old outputs with new inputs on the table's keys; classify every difference."""
    p = Plan()
    for key, kind in table.items():
        if kind == "ignore" or key not in news and key != "xmlDrift":
            continue
        if key == "xmlDrift":
            if olds.get("xmlDrift"):
                p.changed.append(key)
            continue
        old, new = table.norm(key, olds.get(key)), table.norm(key, news.get(key))
        if old != new and (kind := table.kind(key, old, new)) != "ignore":
            p.changed.append(key)
            if kind == "replace":
                p.replaces.append(key)
            elif kind == "restart":
                p.restart.append(key)
    return p


def guest_needs_restart(p: Plan, was_running: bool) -> bool:
    """A restart only happens for restart-class changes of a guest that is running and stays running."""
    return was_running and bool(p.restart)
