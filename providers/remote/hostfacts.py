"""Facts about a host: versions, KVM usability, NICs."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from providers.model.errors import HostError
from providers.model.host import Connection
from providers.remote import session


def _version(n: int) -> str:
    return f"{n // 1000000}.{n // 1000 % 1000}.{n % 1000}"


def _probe(c: Connection) -> tuple[bool, list[str]]:
    """One command: does the CPU have hardware virtualisation (vmx/svm), and the host's network interfaces."""
    _, out, _ = session.run(c, ["sh", "-c", "grep -m1 -owE 'vmx|svm' /proc/cpuinfo; echo --; ls /sys/class/net"],
                            check=False)
    flags, _, nics = out.partition("--")
    return bool(flags.strip()), sorted(n for n in nics.split() if n != "lo")


def _from_libvirt(conn: libvirt.virConnect) -> tuple[bool, list[str]] | None:
    """The same from libvirt alone (host CPU features, interface driver): no SSH session of its own.
    None when the host's libvirt has no interface driver."""
    try:
        names = [i.name() for i in conn.listAllInterfaces(0)]
    except libvirt.libvirtError:
        return None
    features = {f.get("name") for f in ET.fromstring(conn.getCapabilities()).iterfind("host/cpu/feature")}
    return bool(features & {"vmx", "svm"}), sorted(n for n in names if n != "lo")


def _kvm_offered(conn: libvirt.virConnect) -> bool:
    try:
        caps = ET.fromstring(conn.getDomainCapabilities(None, "x86_64", None, "kvm", 0))
    except libvirt.libvirtError:
        return False
    return caps.find("path") is not None


def facts(c: Connection, nic: str = "") -> dict[str, object]:
    """Versions and KVM usability; with `nic`, a clear error when the host has no such interface.

    KVM is usable when libvirt offers it AND the CPU has hardware virtualisation (vmx/svm): libvirt
    advertises type='kvm' whenever /dev/kvm exists, even for a paravirtual /dev/kvm that cannot boot a
    Linux guest; the CPU flags are the honest answer.
    """
    conn = session.virt(c)
    cpu_virt, nics = _from_libvirt(conn) or _probe(c)
    if nic and nic not in nics:
        have = ", ".join(nics) or "none"
        raise HostError(c.host, f"checking hostNic {nic!r}", f"the host has no interface {nic!r} (it has: {have})",
                        f"Set virtfleet:hosts.{c.host}.hostNic to one of: {have}")
    return {"hostname": conn.getHostname(), "libvirtVersion": _version(conn.getLibVersion()),
            "qemuVersion": _version(conn.getVersion()), "kvmUsable": cpu_virt and _kvm_offered(conn)}
