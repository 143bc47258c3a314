"""libvirt networks on a host: lookup, the guests attached, define/start, live DHCP changes, removal.
I/O only: what is refused while guests use a network is decided by the Network resource."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from providers.model.errors import HostError
from providers.model.network import NetworkSpec
from providers.remote import is_not_found, or_none, session
from providers.xml import domain as domain_xml
from providers.xml import network as network_xml


def lookup(conn: libvirt.virConnect, name: str) -> libvirt.virNetwork | None:
    return or_none(conn.networkLookupByName, name)


def observe(net: libvirt.virNetwork) -> dict[str, Any]:
    """The network's managed fields as defined (the persistent config), plus whether it runs and autostarts."""
    seen = network_xml.observe_network(net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))
    return {**seen, "active": bool(net.isActive()), "autostartOn": bool(net.autostart())}


def users(net: libvirt.virNetwork) -> list[str]:
    """Names of the running guests plugged into the network (its ports), sorted."""
    names = set()
    try:
        ports = net.listAllPorts(0) if net.isActive() else []
    except libvirt.libvirtError as exc:
        if is_not_found(exc):
            return []
        raise
    for port in ports:
        owner = ET.fromstring(port.XMLDesc(0)).find("owner/name")
        if owner is not None and owner.text:
            names.add(owner.text)
    return sorted(names)


def guests(conn: libvirt.virConnect, name: str) -> list[tuple[str, bool]]:
    """(name, running) of every domain on the host, running or not, with an interface on network `name`."""
    found = []
    for dom in conn.listAllDomains(0):
        try:
            active = bool(dom.isActive())
            xmls = [dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)] + ([dom.XMLDesc(0)] if active else [])
            if any(name in domain_xml.network_sources(x) for x in xmls):
                found.append((dom.name(), active))
        except libvirt.libvirtError as exc:
            if not is_not_found(exc):
                raise
    return sorted(found)


def start(spec: NetworkSpec, net: libvirt.virNetwork) -> None:
    if not net.isActive():
        try:
            net.create()
        except libvirt.libvirtError as exc:
            raise HostError(spec.conn.host, f"starting network {spec.name!r}", str(exc).split("\n")[0],
                            "Check that its bridge name and subnet are free on the host") from exc
    if bool(net.autostart()) != spec.autostart:
        net.setAutostart(int(spec.autostart))


def define_new(spec: NetworkSpec) -> libvirt.virNetwork:
    """Define and start a new network; a failed start removes the definition again."""
    net = session.virt(spec.conn).networkDefineXML(network_xml.network(spec))
    try:
        start(spec, net)
    except BaseException:
        net.undefine()
        raise
    return net


def set_dhcp_range(net: libvirt.virNetwork, old: dict[str, str], new: dict[str, str]) -> None:
    """Change the DHCP range of a (running) network in place: guests stay connected."""
    flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    if net.isActive():
        flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
    section = libvirt.VIR_NETWORK_SECTION_IP_DHCP_RANGE
    net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, section, -1,
               network_xml.dhcp_range(new["start"], new["end"]), flags)
    net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, section, -1,
               network_xml.dhcp_range(old["start"], old["end"]), flags)


def redefine(spec: NetworkSpec, net: libvirt.virNetwork) -> libvirt.virNetwork:
    """Define the network anew with its UUID and restart it (whoever is plugged in is disconnected)."""
    net = session.virt(spec.conn).networkDefineXML(network_xml.network(spec, net.UUIDString()))
    if net.isActive():
        net.destroy()
    start(spec, net)
    return net


def remove(net: libvirt.virNetwork) -> None:
    """Stop and undefine the network (gone already: fine)."""
    try:
        if net.isActive():
            net.destroy()
        net.undefine()
    except libvirt.libvirtError as exc:
        if not is_not_found(exc):
            raise
