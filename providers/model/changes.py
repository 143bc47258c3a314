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
from providers.model.host import Connection


class Table(dict[str, str]):
    """A change table: property -> "replace" | "restart" | "inplace" | "ignore", with what a key missing from
    older state stands for (added after resources were created: no spurious change) and how a property's
    values compare (a connection by where it points)."""

    def __init__(self, changes: dict[str, str], defaults: dict[str, Any] | None = None,
                 norms: dict[str, Callable[[Any], Any]] | None = None) -> None:
        super().__init__(changes)
        self.defaults = defaults or {}
        self.norms = {"connection": Connection.identity, **(norms or {})}

    def norm(self, key: str, value: Any) -> Any:
        if value is None:
            value = self.defaults.get(key)
        norm = self.norms.get(key)
        return norm(value) if norm is not None and value is not None else value


# Guest: from the field declarations (GuestSpec), plus two keys that are not fields of the spec
GUEST_TABLE = Table({
    **fields.change_table(GuestSpec),
    "cloudInit": "ignore",     # the seed's content (secret); every change of it changes `seed`
    "xmlDrift": "inplace",     # live definition edited outside virtfleet: redefine
}, fields.defaults(GuestSpec), fields.norms(GuestSpec))

# Volume: capacity grows in place (shrink refused in check); the rest replaces.
VOLUME_TABLE = Table({
    "connection": "replace", "pool": "replace", "name": "replace", "mode": "replace",
    "capacity": "inplace", "deleteOnDestroy": "inplace",
    "baseVolume": "ignore",    # an existing disk keeps its own backing file; only new disks use the new base
    "baseFormat": "ignore",
    "adopt": "ignore",         # only matters at create: an existing disk is taken as is
    "owner": "ignore",         # the resource's own name: recorded on the host at create
})

HOST_TABLE = Table({"connection": "replace", "pool": "replace", "hostNic": "inplace", "virtType": "inplace"})

# Network: what needs the network restarted is applied only while no running guest uses it (network.py)
NETWORK_TABLE = Table({"connection": "replace", "name": "replace", "mode": "inplace", "bridge": "inplace",
                       "address": "inplace", "dhcp": "inplace", "autostart": "inplace"})

BASE_IMAGE_TABLE = Table({"connection": "replace", "pool": "replace", "digest": "replace", "format": "replace",
                          "image": "inplace", "source": "inplace", "size": "replace",
                          "fileSize": "ignore"})  # the built file's size, for the upload's account


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
        if table.norm(key, olds.get(key)) != table.norm(key, news.get(key)):
            p.changed.append(key)
            if kind == "replace":
                p.replaces.append(key)
            elif kind == "restart":
                p.restart.append(key)
    return p


def guest_needs_restart(p: Plan, was_running: bool) -> bool:
    """A restart only happens for restart-class changes of a guest that is running and stays running."""
    return was_running and bool(p.restart)
