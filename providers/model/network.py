"""A libvirt network on one host."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from providers.model import validate as v
from providers.model.host import Connection

NETWORK_MODES = ("nat", "route", "open", "bridge")  # bridge: an existing bridge of the host, no DHCP


@dataclass(frozen=True)
class NetworkSpec:
    """A libvirt network on one host: NAT, routed or open with its own bridge and DHCP, or a host bridge."""

    conn: Connection
    name: str
    mode: str
    bridge: str
    address: str = ""      # the host's address on the network with its prefix, e.g. 192.168.150.1/24
    dhcp_start: str = ""
    dhcp_end: str = ""
    autostart: bool = True

    def to_props(self) -> dict[str, Any]:
        return {"connection": self.conn.to_props(), "name": self.name, "mode": self.mode, "bridge": self.bridge,
                "address": self.address, "dhcp": {"start": self.dhcp_start, "end": self.dhcp_end}
                if self.dhcp_start else None, "autostart": self.autostart}

    @classmethod
    def from_props(cls, p: dict[str, Any], key: str = "") -> NetworkSpec:
        at = f"{key}." if key else ""
        name = v.name(f"{at}name", p.get("name"), "network name")
        mode = v.choice(f"{at}mode", p.get("mode", "nat"), NETWORK_MODES, "network mode")
        bridge = v.nic(f"{at}bridge", p.get("bridge") or f"vf-{name[:12]}")
        autostart = v.boolean(f"{at}autostart", p.get("autostart", True))
        if mode == "bridge":
            if p.get("bridge") in (None, ""):
                raise v.ConfigError(f"{at}bridge", "is missing", "Name the host's existing bridge, e.g. br0")
            for k in ("address", "dhcp"):
                if p.get(k) not in (None, "", False):
                    raise v.ConfigError(f"{at}{k}", "a bridge-mode network has no address or DHCP of its own "
                                        "(the bridge's LAN provides them)", f"Remove `{k}`, or use mode nat/route")
            return cls(Connection.from_props(p.get("connection") or {}), name, mode, bridge, autostart=autostart)
        iface = v.interface_network(f"{at}address", p.get("address"))
        start, end = v.dhcp_range(f"{at}dhcp", p.get("dhcp"), iface)
        return cls(Connection.from_props(p.get("connection") or {}), name, mode, bridge, str(iface), start, end,
                   autostart)
