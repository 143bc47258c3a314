"""Change tables and diffs, on normalised values, in pure functions.

For each resource: which property changes update in place, which need a guest restart, which replace.
The preview (`diff`) and the action (`update`) both read these tables, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import fields
from .spec import GuestSpec

# Guest: from the field declarations (GuestSpec), plus two keys that are not fields of the spec
GUEST_TABLE: dict[str, str] = {
    **fields.change_table(GuestSpec),
    "cloudInit": "ignore",     # the seed's content (secret); every change of it changes `seed`
    "xmlDrift": "inplace",     # live definition edited outside virtfleet: redefine
}

# Volume: capacity grows in place (shrink refused in check); the rest replaces.
VOLUME_TABLE: dict[str, str] = {
    "connection": "replace", "pool": "replace", "name": "replace", "mode": "replace",
    "capacity": "inplace", "deleteOnDestroy": "inplace",
    "baseVolume": "ignore",    # an existing disk keeps its own backing file; only new disks use the new base
    "baseFormat": "ignore",
    "adopt": "ignore",         # only matters at create: an existing disk is taken as is
}

HOST_TABLE: dict[str, str] = {"connection": "replace", "pool": "replace", "hostNic": "inplace",
                              "virtType": "inplace"}

# Network: what needs the network restarted is applied only while no running guest uses it (network.py)
NETWORK_TABLE: dict[str, str] = {"connection": "replace", "name": "replace", "mode": "inplace", "bridge": "inplace",
                                 "address": "inplace", "dhcp": "inplace", "autostart": "inplace"}

BASE_IMAGE_TABLE: dict[str, str] = {"connection": "replace", "pool": "replace", "digest": "replace",
                                    "format": "replace", "image": "inplace", "source": "inplace",
                                    "size": "replace"}


def _norm_connection(c: Any) -> Any:
    """Identity of a host connection: where it points, not how we authenticate."""
    if isinstance(c, dict):
        return (c.get("address"), int(c.get("port") or 22))
    return c


# what a key missing from older state means (added after resources were created: no spurious change), and
# how a value is compared; the guest's come from its field declarations
DEFAULTS: dict[str, dict[str, Any]] = {"guest": fields.defaults(GuestSpec)}
NORMS: dict[str, Callable[[Any], Any]] = {"connection": _norm_connection, **fields.norms(GuestSpec)}


def _norm(table: dict[str, str], key: str, value: Any) -> Any:
    if value is None and table is GUEST_TABLE:
        value = DEFAULTS["guest"].get(key)
    norm = NORMS.get(key)
    return norm(value) if norm is not None and value is not None else value


@dataclass
class Plan:
    changed: list[str] = field(default_factory=list)
    replaces: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        return bool(self.changed)


def plan(table: dict[str, str], olds: dict[str, Any], news: dict[str, Any]) -> Plan:
    """Compare old outputs with new inputs on the table's keys; classify every difference."""
    p = Plan()
    for key, kind in table.items():
        if kind == "ignore" or key not in news and key != "xmlDrift":
            continue
        if key == "xmlDrift":
            if olds.get("xmlDrift"):
                p.changed.append(key)
            continue
        if _norm(table, key, olds.get(key)) != _norm(table, key, news.get(key)):
            p.changed.append(key)
            if kind == "replace":
                p.replaces.append(key)
            elif kind == "restart":
                p.restart.append(key)
    return p


def guest_needs_restart(p: Plan, was_running: bool) -> bool:
    """A restart only happens for restart-class changes of a guest that is running and stays running."""
    return was_running and bool(p.restart)
