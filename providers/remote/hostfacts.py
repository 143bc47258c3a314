"""Facts about a host: versions, KVM usability, NICs."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from ..errors import HostError
from ..spec import Connection
from . import session


def _version(n: int) -> str:
    return f"{n // 1000000}.{n // 1000 % 1000}.{n % 1000}"


def kvm_usable(c: Connection, conn: libvirt.virConnect) -> bool:
    """KVM is usable when libvirt offers it AND the CPU has hardware virtualisation (vmx/svm).

    libvirt advertises type='kvm' whenever /dev/kvm exists, even for a paravirtual /dev/kvm that cannot
    boot a Linux guest; the CPU flags are the honest answer.
    """
    try:
        caps = ET.fromstring(conn.getDomainCapabilities(None, "x86_64", None, "kvm", 0))
    except libvirt.libvirtError:
        return False
    if caps.find("path") is None:
        return False
    rc, out, _ = session.run(c, ["grep", "-m1", "-oE", "\\b(vmx|svm)\\b", "/proc/cpuinfo"], check=False)
    return rc == 0 and bool(out.strip())


def facts(c: Connection) -> dict[str, object]:
    conn = session.virt(c)
    return {"hostname": conn.getHostname(), "libvirtVersion": _version(conn.getLibVersion()),
            "qemuVersion": _version(conn.getVersion()), "kvmUsable": kvm_usable(c, conn)}


def require_nic(c: Connection, nic: str) -> None:
    """Raise a clear error when the host has no network interface `nic`."""
    rc, _, _ = session.run(c, ["test", "-e", f"/sys/class/net/{nic}"], check=False)
    if rc != 0:
        _, out, _ = session.run(c, ["ls", "/sys/class/net"], check=False)
        have = ", ".join(sorted(n for n in out.split() if n != "lo")) or "none"
        raise HostError(c.host, f"checking hostNic {nic!r}", f"the host has no interface {nic!r} (it has: {have})",
                        f"Set virtfleet:hosts.{c.host}.hostNic to one of: {have}")
