"""Domains on a host: lookup, state, graceful stop, removal (starts: `starts`).  Not-found aware."""

from __future__ import annotations

import time
from dataclasses import dataclass

import libvirt

from providers.remote import is_not_found, or_none
from providers.xml import domain as domain_xml

STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate", libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running", libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down", libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed", libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}
UNDEFINE_FLAGS = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                  | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)


def by_uuid(conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain | None:
    return or_none(conn.lookupByUUIDString, uuid)


def by_name(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    return or_none(conn.lookupByName, name)


@dataclass(frozen=True)
class DiskUser:
    """A domain whose definition (persistent or live) has a given disk; `owner` is its virtfleet owner
    metadata, None for a domain defined outside virtfleet."""

    dom: libvirt.virDomain
    name: str
    owner: dict[str, str] | None
    running: bool


def disk_users(conn: libvirt.virConnect, path: str) -> list[DiskUser]:
    """Every domain on the host, running or not, that has `path` as a disk (a domain gone meanwhile is
    skipped)."""
    found = []
    for dom in conn.listAllDomains(0):
        try:
            active = bool(dom.isActive())
            xmls = [inactive_xml(dom)] + ([dom.XMLDesc(0)] if active else [])
            seen = [domain_xml.disk_users(x) for x in xmls]
            if any(path in sources for _, sources in seen):
                found.append(DiskUser(dom, dom.name(), seen[0][0], active))
        except libvirt.libvirtError as exc:
            if not is_not_found(exc):
                raise
    return found


def state(dom: libvirt.virDomain) -> str:
    return STATES.get(dom.state()[0], "unknown")


def define(conn: libvirt.virConnect, xml: str) -> libvirt.virDomain:
    """Define (or redefine, same UUID) a domain from its XML."""
    return conn.defineXML(xml)


def is_active(dom: libvirt.virDomain) -> bool:
    return bool(dom.isActive())


def autostart(dom: libvirt.virDomain) -> bool:
    return bool(dom.autostart())


def set_autostart(dom: libvirt.virDomain, on: bool) -> None:
    dom.setAutostart(int(on))


def resume(dom: libvirt.virDomain) -> None:
    dom.resume()


def inactive_xml(dom: libvirt.virDomain) -> str:
    return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def wait_shutoff(dom: libvirt.virDomain, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not dom.isActive():
                return True
        except libvirt.libvirtError as exc:
            if is_not_found(exc):
                return True
            raise
        time.sleep(0.2)
    return not dom.isActive()


def stop(dom: libvirt.virDomain, timeout: float, agent: bool = False) -> str:
    """Graceful shutdown, wait up to `timeout` s, then power off.  Returns "graceful"/"forced"/"stopped".
    With `agent` (the guest has the agent's channel) the guest agent is asked first and the ACPI power button
    pressed when it does not answer (libvirt checks the agent with a short sync, so a silent one costs
    seconds, not the timeout); a guest whose OS ignores the power button still shuts down cleanly."""
    try:
        if not dom.isActive():
            return "stopped"
        if timeout > 0:
            try:
                dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN |
                                  (libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT if agent else 0))
            except libvirt.libvirtError as exc:
                if is_not_found(exc) or not dom.isActive():
                    return "stopped"
            if wait_shutoff(dom, timeout):
                return "graceful"
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            if not (is_not_found(exc) or exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID):
                raise
        return "forced"
    except libvirt.libvirtError as exc:
        if is_not_found(exc):
            return "stopped"
        raise


def undefine(dom: libvirt.virDomain) -> None:
    """Undefine with NVRAM, managed save, snapshot and checkpoint metadata; gone already is fine."""
    try:
        dom.undefineFlags(UNDEFINE_FLAGS)
    except libvirt.libvirtError as exc:
        if is_not_found(exc):
            return
        if exc.get_error_code() in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
            dom.undefine()
            return
        raise


def remove(dom: libvirt.virDomain, timeout: float, agent: bool = False) -> str:
    """Graceful shutdown -> destroy -> undefine.  Returns how it stopped."""
    how = stop(dom, timeout, agent)
    undefine(dom)
    return how
