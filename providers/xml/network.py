"""Networks in libvirt XML, built and read back (libvirt's own additions ignored)."""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from typing import Any

from providers.model.network import NetworkSpec
from providers.xml.util import attr, sub, text, to_string

_sub, _attr, _text = sub, attr, text  # the short names the builders below use


def network(spec: NetworkSpec, uuid: str = "") -> str:
    root = ET.Element("network")
    _sub(root, "name", spec.name)
    if uuid:
        _sub(root, "uuid", uuid)
    _sub(root, "forward", mode=spec.mode)
    if spec.mode == "bridge":
        _sub(root, "bridge", name=spec.bridge)
        return to_string(root)
    _sub(root, "bridge", name=spec.bridge, stp="on", delay="0")
    iface = ipaddress.IPv4Interface(spec.address)
    ip = _sub(root, "ip", address=str(iface.ip), prefix=str(iface.network.prefixlen))
    if spec.dhcp:
        _sub(_sub(ip, "dhcp"), "range", start=spec.dhcp.start, end=spec.dhcp.end)
    return to_string(root)


def dhcp_range(start: str, end: str) -> str:
    """One DHCP range element, as libvirt's live network update takes it."""
    return to_string(ET.Element("range", start=start, end=end))


def observe_network(xml: str) -> dict[str, Any]:
    """The managed fields of a network's XML (libvirt's own additions, e.g. its MAC, are ignored)."""
    root = ET.fromstring(xml)
    ip = root.find("ip")
    address = ""
    if ip is not None and ip.get("address"):
        prefix = ip.get("prefix") or str(ipaddress.IPv4Network(f"0.0.0.0/{ip.get('netmask')}").prefixlen)
        address = f"{ip.get('address')}/{prefix}"
    rng = root.find("ip/dhcp/range")
    return {"name": _text(root, "name"), "mode": _attr(root, "forward", "mode", "isolated"),
            "bridge": _attr(root, "bridge", "name"), "address": address,
            "dhcp": {"start": rng.get("start", ""), "end": rng.get("end", "")} if rng is not None else None}
