"""A guest's addresses per interface, matched by MAC, from the sources libvirt can ask.  Pure.

Sources: `lease` (the DHCP leases of a libvirt network), `agent` (qemu-guest-agent inside the guest) and
`arp` (the host's neighbour table).  Each interface type has its own order: a network's leases are
authoritative and need nothing from the guest; a macvtap (`direct`) guest is invisible to its own host's
neighbour table, so only the agent can tell.  Loopback and link-local addresses are never reported.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

ORDER: dict[str, tuple[str, ...]] = {
    "network": ("lease", "agent", "arp"),
    "bridge": ("agent", "arp"),
    "direct": ("agent",),
}


MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def sources_for(ifaces: list[dict[str, Any]], agent: bool) -> list[str]:
    """The sources worth asking for these interfaces, in first-use order."""
    out: list[str] = []
    for iface in ifaces:
        for src in ORDER.get(str(iface.get("type")), ()):
            if (src != "agent" or agent) and src not in out:
                out.append(src)
    return out


MAX_ADDRESSES = 64  # per interface: a guest or host answering more is cut there


def canonical(addr: object) -> str:
    """An address a guest or host reported, in canonical form ('' if it is not a plain usable address).
    Nothing else is kept: a scope id (`fe80::1%eth0 -oProxyCommand=...`), spaces, a name, a loopback,
    link-local, multicast or unspecified address."""
    if not isinstance(addr, str) or len(addr) > 64 or "%" in addr:
        return ""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return ""
    return "" if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast else str(ip)


def _sort_key(addr: str) -> tuple[int, str]:
    return (0 if ipaddress.ip_address(addr).version == 4 else 1, addr)


def by_mac(libvirt_answer: dict[str, Any]) -> dict[str, list[str]]:
    """virDomainInterfaceAddresses' answer ({ifname: {hwaddr, addrs: [{addr, ...}]}}) as {mac: [address]}."""
    out: dict[str, list[str]] = {}
    for iface in (libvirt_answer or {}).values():
        mac = str(iface.get("hwaddr") or "").lower() if isinstance(iface, dict) else ""
        if not MAC.fullmatch(mac):
            continue  # the agent's `lo`, or not a MAC address
        given = iface.get("addrs") if isinstance(iface.get("addrs"), list) else []
        addrs = [canonical(a.get("addr")) for a in given[:MAX_ADDRESSES] if isinstance(a, dict)]
        out.setdefault(mac, [])
        out[mac] += [a for a in addrs if a and a not in out[mac]][:MAX_ADDRESSES - len(out[mac])]
    return {mac: sorted(addrs, key=_sort_key) for mac, addrs in out.items()}


def pick(ifaces: list[dict[str, Any]], found: dict[str, dict[str, list[str]]], agent: bool) -> list[dict[str, Any]]:
    """Per interface (in the guest's order): the addresses of the first source in its order that has any."""
    out = []
    for iface in ifaces:
        mac = str(iface.get("mac", "")).lower()
        chosen: dict[str, Any] = {"mac": mac, "source": "", "addresses": []}
        for src in ORDER.get(str(iface.get("type")), ()):
            if src == "agent" and not agent:
                continue
            addrs = found.get(src, {}).get(mac) or []
            if addrs:
                chosen = {"mac": mac, "source": src, "addresses": addrs}
                break
        out.append(chosen)
    return out


def first(picked: list[dict[str, Any]]) -> str:
    """The address to log in to: the first interface's first address (IPv4 before IPv6), or ''."""
    for iface in picked:
        if iface["addresses"]:
            return str(iface["addresses"][0])
    return ""


def waiting_for(ifaces: list[dict[str, Any]], picked: list[dict[str, Any]], agent: bool,
                errors: dict[str, str]) -> str:
    """What a wait gave up on, in words: each interface without an address and what its sources said."""
    parts = []
    for iface, got in zip(ifaces, picked, strict=True):
        if got["addresses"]:
            continue
        asked = [f"{src} ({errors[src]})" if src in errors else src
                 for src in ORDER.get(str(iface.get("type")), ()) if src != "agent" or agent]
        parts.append(f"interface {got['mac']} ({iface.get('type')} {iface.get('source')}): asked "
                     f"{', '.join(asked) or 'no source'}")
    return "; ".join(parts)
