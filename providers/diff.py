"""Change tables and diffs, on normalised values, in pure functions.

For each resource: which property changes update in place, which need a guest restart, which replace.
The preview (`diff`) and the action (`update`) both read these tables, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Guest: property -> "replace" | "restart" | "inplace"
GUEST_TABLE: dict[str, str] = {
    "connection": "replace",   # another host: a new domain there, the old one removed first
    "name": "replace",         # libvirt cannot rename a running domain; names are unique per host
    "memory": "restart",       # redefined with the same UUID, then shutdown + start
    "vcpus": "restart",
    "cpuPriority": "restart",  # the scheduler class is set when the vCPU threads start
    "virtType": "restart",
    "diskPath": "restart",
    "diskFormat": "restart",
    "interfaces": "restart",
    "graphics": "restart",
    "kernel": "restart",
    "initrd": "restart",
    "cmdline": "restart",
    "running": "inplace",      # start / graceful shutdown
    "autostart": "inplace",
    "owner": "inplace",        # metadata only
    "shutdownTimeout": "inplace",
    "ip": "inplace",           # informational
    "agent": "restart",        # the guest agent's channel
    "seed": "restart",         # a new cloud-init seed (new content, new instance-id): read at boot
    "cloudInit": "ignore",     # the seed's content (secret); every change of it changes `seed`
    "waitForAddress": "ignore",  # how long create/update wait: nothing on the host
    "xmlDrift": "inplace",     # live definition edited outside virtfleet: redefine
}

# Volume: capacity grows in place (shrink refused in check); the rest replaces.
VOLUME_TABLE: dict[str, str] = {
    "connection": "replace", "pool": "replace", "name": "replace", "mode": "replace",
    "capacity": "inplace", "deleteOnDestroy": "inplace",
    "baseVolume": "ignore",    # an existing disk keeps its own backing file; only new disks use the new base
    "baseFormat": "ignore",
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


# what a key missing from older state means (added after resources were created: no spurious change)
DEFAULTS: dict[str, Any] = {"cpuPriority": "normal", "agent": False}


def _norm(key: str, value: Any) -> Any:
    if value is None:
        value = DEFAULTS.get(key)
    if key == "connection":
        return _norm_connection(value)
    if key == "interfaces" and isinstance(value, list):
        keys = ("type", "source", "mac", "model")
        return [{k: (str(i.get(k) or "").lower() if k == "mac" else i.get(k)) for k in keys} for i in value]
    return value


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
        if _norm(key, olds.get(key)) != _norm(key, news.get(key)):
            p.changed.append(key)
            if kind == "replace":
                p.replaces.append(key)
            elif kind == "restart":
                p.restart.append(key)
    return p


def guest_needs_restart(p: Plan, was_running: bool) -> bool:
    """A restart only happens for restart-class changes of a guest that is running and stays running."""
    return was_running and bool(p.restart)
