"""Ask a running guest's addresses: DHCP leases and the guest agent through libvirt, the host's neighbour
table with `ip -j neigh` over the host's SSH master (libvirt 9.0's own ARP source fails with "wrong
nlmsg len" on current kernels)."""

from __future__ import annotations

import json
import time
from typing import Any

import libvirt

from providers.model import addresses
from providers.model.errors import HostError
from providers.model.host import Connection
from providers.remote import session

SOURCES = {"lease": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
           "agent": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
           "arp": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP}
AGENT_TIMEOUT = 3  # seconds an agent command may take before libvirt gives up on it (its default: forever)


def neighbours(c: Connection) -> dict[str, list[str]]:
    """The host's neighbour table as {mac: [address]} (entries that did not fail to resolve)."""
    _, out, _ = session.run(c, ["ip", "-j", "neigh", "show"], timeout=30)
    return addresses.by_mac(neighbour_table(out))


MAX_NEIGHBOURS = 4096  # entries read of a host's table; any more are not a hypervisor's


def neighbour_table(out: str) -> dict[str, Any]:
    """`ip -j neigh` output as virDomainInterfaceAddresses' shape; entries of another shape are skipped,
    and output that is not such a list is an empty table."""
    try:
        entries = json.loads(out[:1 << 22] or "[]")
    except (ValueError, RecursionError):
        return {}
    table: dict[str, Any] = {}
    for n, entry in enumerate(entries[:MAX_NEIGHBOURS] if isinstance(entries, list) else []):
        state = entry.get("state") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("lladdr"), str) or \
                not isinstance(state, (list, type(None))) or {"FAILED", "INCOMPLETE"} & set(map(str, state or [])):
            continue
        table[str(n)] = {"hwaddr": entry["lladdr"], "addrs": [{"addr": entry.get("dst", "")}]}
    return table


def query(dom: libvirt.virDomain, sources: list[str],
          c: Connection | None = None) -> tuple[dict[str, dict[str, list[str]]], dict[str, str]]:
    """({source: {mac: [address]}}, {source: why it had nothing}) for one guest, one call per source."""
    found: dict[str, dict[str, list[str]]] = {}
    errors: dict[str, str] = {}
    for src in sources:
        if src == "arp" and c is not None:
            try:
                found[src] = neighbours(c)
            except (HostError, ValueError) as exc:
                errors[src] = str(exc).split("\n")[0]
            continue
        try:
            if src == "agent":
                dom.agentSetResponseTimeout(AGENT_TIMEOUT, 0)
            found[src] = addresses.by_mac(dom.interfaceAddresses(SOURCES[src], 0))
        except libvirt.libvirtError as exc:
            errors[src] = (exc.get_error_message() or str(exc)).split("\n")[0]
    return found, errors


def observe(dom: libvirt.virDomain, ifaces: list[dict[str, Any]], agent: bool,
            c: Connection | None = None) -> list[dict[str, Any]]:
    """Addresses per interface now (none for a guest that is not running)."""
    if not dom.isActive():
        return addresses.pick(ifaces, {}, agent)
    found, _ = query(dom, addresses.sources_for(ifaces, agent), c)
    return addresses.pick(ifaces, found, agent)


def wait(dom: libvirt.virDomain, ifaces: list[dict[str, Any]], agent: bool, timeout: float,
         c: Connection | None = None) -> tuple[list[dict[str, Any]], str, libvirt.virDomain]:
    """Poll until every interface has an address or `timeout` s passed: (addresses, what it gave up on or '',
    the domain).  A connection lost meanwhile (libvirtd restarted, the master gone) is opened again, within
    the same time, and the domain returned is the one on the connection in use."""
    deadline = time.monotonic() + timeout
    sources = addresses.sources_for(ifaces, agent)
    picked, errors = addresses.pick(ifaces, {}, agent), dict[str, str]()
    while True:
        try:
            active = bool(dom.isActive())
            found, errors = query(dom, sources, c) if active else ({}, {"guest": "not running"})
            picked = addresses.pick(ifaces, found, agent)
        except libvirt.libvirtError as exc:
            if c is None or time.monotonic() >= deadline:
                raise
            errors, active = {"libvirt": (exc.get_error_message() or str(exc)).split("\n")[0]}, True
            time.sleep(1.0)
            try:
                dom = session.virt(c).lookupByUUIDString(dom.UUIDString())
            except libvirt.libvirtError:
                session.forget(c)  # a dead connection still cached: the next turn opens a new one
            except HostError:
                pass  # the host still away: tried again at the next turn
            continue
        if all(p["addresses"] for p in picked):
            return picked, "", dom
        if time.monotonic() >= deadline or not active:
            return picked, addresses.waiting_for(ifaces, picked, agent, errors), dom
        time.sleep(1.0)
