"""A libvirt network on one host, one declaration per field (`model.fields`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from providers.model import fields
from providers.model import validate as v
from providers.model.host import Connection, connection_field

NETWORK_MODES = ("nat", "route", "open", "bridge")  # bridge: an existing bridge of the host, no DHCP


@dataclass(frozen=True)
class DhcpRange:
    start: str
    end: str

    def to_props(self) -> dict[str, str]:
        return {"start": self.start, "end": self.end}


def _mode(p: dict[str, Any], at: str) -> str:
    return v.choice(f"{at}mode", p.get("mode") or "nat", NETWORK_MODES, "network mode")


def _bridge(p: dict[str, Any], at: str) -> str:
    """The network's own bridge (named after it unless given), or in bridge mode the host's existing one."""
    if _mode(p, at) == "bridge" and p.get("bridge") in (None, ""):
        raise v.ConfigError(f"{at}bridge", "is missing", "Name the host's existing bridge, e.g. br0")
    return v.nic(f"{at}bridge", p.get("bridge") or f"vf-{str(p.get('name'))[:12]}")


def _address(p: dict[str, Any], at: str) -> str:
    if _mode(p, at) == "bridge":
        for k in ("address", "dhcp"):
            if p.get(k) not in (None, "", False):
                raise v.ConfigError(f"{at}{k}", "a bridge-mode network has no address or DHCP of its own "
                                    "(the bridge's LAN provides them)", f"Remove `{k}`, or use mode nat/route")
        return ""
    return str(v.interface_network(f"{at}address", p.get("address")))


def _dhcp(p: dict[str, Any], at: str) -> DhcpRange | None:
    address = _address(p, at)
    if not address:
        return None
    start, end = v.dhcp_range(f"{at}dhcp", p.get("dhcp"), v.interface_network(f"{at}address", address))
    return DhcpRange(start, end) if start else None


def _dhcp_change(old: Any, new: Any) -> str:
    """A new range is set live; turning DHCP on or off restarts the network."""
    return "inplace" if old and new else "restart"


RESTARTS = "the network restarts, only while no running guest is plugged into it"


@dataclass(frozen=True)
class NetworkSpec:
    """A libvirt network on one host: NAT, routed or open with its own bridge and DHCP, or a host bridge.
    Change class "restart": the network is stopped and started again (see `providers/network.py`)."""

    conn: Connection = connection_field("another host: a network there")
    name: str = fields.field_of(key="name", change="replace", check=lambda k, x: v.name(k, x, "network name"))
    mode: str = fields.field_of(key="mode", change="restart", conf=True, load=_mode, doc=RESTARTS)
    bridge: str = fields.field_of(key="bridge", change="restart", conf=True, load=_bridge, doc=RESTARTS)
    address: str = fields.field_of(default="", key="address", change="restart", conf=True, load=_address,
                                   doc="the host's address on the network with its prefix; " + RESTARTS)
    dhcp: DhcpRange | None = fields.field_of(
        default=None, key="dhcp", change=_dhcp_change, conf=True, load=_dhcp,
        dump=lambda d: d.to_props() if d else None, doc="a new range is set live; on or off: " + RESTARTS)
    autostart: bool = fields.field_of(default=True, key="autostart", change="inplace", check=v.boolean, conf=True)

    def to_props(self) -> dict[str, Any]:
        return fields.to_props(self)

    @classmethod
    def from_props(cls, p: dict[str, Any], key: str = "") -> NetworkSpec:
        return cls(**fields.from_props(cls, p, f"{key}." if key else ""))
