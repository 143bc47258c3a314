"""libvirt XML from specs, with ElementTree only (names and paths are escaped by the serializer).

Small functions named after the libvirt elements they build, plus `observe_domain`, which reads any
domain XML (ours or libvirt's live one, with its addresses, aliases and seclabels) back into the
canonical dict that the diff compares.  Pure: no host is touched here.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from typing import Any

from .spec import GuestSpec, InterfaceSpec, NetworkSpec, Owner, PoolSpec

OWNER_NS = "urn:virtfleet:owner:1"
ET.register_namespace("virtfleet", OWNER_NS)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def to_string(el: ET.Element) -> str:
    ET.indent(el)
    return ET.tostring(el, encoding="unicode")


# ---- storage ---------------------------------------------------------------------------------------

def pool(spec: PoolSpec) -> str:
    root = ET.Element("pool", type=spec.type)
    _sub(root, "name", spec.name)
    if spec.type == "logical":
        src = _sub(root, "source")
        _sub(src, "name", spec.vg)
        _sub(src, "format", type="lvm2")
    _sub(_sub(root, "target"), "path", spec.path)
    return to_string(root)


def volume(name: str, capacity: int, fmt: str, backing_path: str = "", backing_fmt: str = "",
           mode: str = "", allocation: int = 0) -> str:
    """A volume; allocation 0 keeps file volumes sparse (libvirt preallocates raw ones otherwise).

    For LVM volumes give allocation = capacity: a smaller one asks for a sparse snapshot LV.
    """
    root = ET.Element("volume")
    _sub(root, "name", name)
    _sub(root, "capacity", str(capacity), unit="bytes")
    _sub(root, "allocation", str(allocation), unit="bytes")
    target = _sub(root, "target")
    _sub(target, "format", type=fmt)
    if mode:
        _sub(_sub(target, "permissions"), "mode", mode)
    if backing_path:
        bs = _sub(root, "backingStore")
        _sub(bs, "path", backing_path)
        _sub(bs, "format", type=backing_fmt)
    return to_string(root)


# ---- networks ----------------------------------------------------------------------------------------

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
    if spec.dhcp_start:
        _sub(_sub(ip, "dhcp"), "range", start=spec.dhcp_start, end=spec.dhcp_end)
    return to_string(root)


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


# ---- domain ------------------------------------------------------------------------------------------

def metadata(parent: ET.Element, owner: Owner) -> None:
    md = _sub(parent, "metadata")
    el = _sub(md, f"{{{OWNER_NS}}}owner")
    for key in ("project", "stack", "resource"):
        _sub(el, f"{{{OWNER_NS}}}{key}", getattr(owner, key))


def os_(parent: ET.Element, spec: GuestSpec) -> None:
    el = _sub(parent, "os")
    _sub(el, "type", "hvm", arch="x86_64", machine="pc")
    if spec.kernel:
        _sub(el, "kernel", spec.kernel)
        if spec.initrd:
            _sub(el, "initrd", spec.initrd)
        if spec.cmdline:
            _sub(el, "cmdline", spec.cmdline)
    else:
        _sub(el, "boot", dev="hd")


def disk(devices: ET.Element, spec: GuestSpec) -> None:
    """A file disk, or a block disk for a device path (an LV of a logical pool)."""
    block = spec.disk_path.startswith("/dev/")
    el = _sub(devices, "disk", type="block" if block else "file", device="disk")
    _sub(el, "driver", name="qemu", type=spec.disk_format)
    if block:
        _sub(el, "source", dev=spec.disk_path)
    else:
        _sub(el, "source", file=spec.disk_path)
    _sub(el, "target", dev="vda", bus="virtio")


def seed_cdrom(devices: ET.Element, path: str) -> None:
    """The cloud-init seed as a read-only IDE CD-ROM (machine type pc has IDE; every guest OS reads it)."""
    block = path.startswith("/dev/")
    el = _sub(devices, "disk", type="block" if block else "file", device="cdrom")
    _sub(el, "driver", name="qemu", type="raw")
    _sub(el, "source", **({"dev": path} if block else {"file": path}))
    _sub(el, "target", dev="hdc", bus="ide")
    _sub(el, "readonly")


AGENT_CHANNEL = "org.qemu.guest_agent.0"


def agent_channel(devices: ET.Element) -> None:
    _sub(_sub(devices, "channel", type="unix"), "target", type="virtio", name=AGENT_CHANNEL)


def interface(devices: ET.Element, iface: InterfaceSpec) -> None:
    el = _sub(devices, "interface", type=iface.type)
    _sub(el, "mac", address=iface.mac)
    if iface.type == "direct":
        _sub(el, "source", dev=iface.source, mode="bridge")
    elif iface.type == "bridge":
        _sub(el, "source", bridge=iface.source)
    else:
        _sub(el, "source", network=iface.source)
    _sub(el, "model", type=iface.model)


def graphics(devices: ET.Element, kind: str) -> None:
    if kind == "none":
        return
    _sub(devices, "graphics", type=kind, autoport="yes", listen="127.0.0.1")
    _sub(devices, "input", type="keyboard", bus="usb")
    _sub(_sub(devices, "video"), "model", type="qxl" if kind == "spice" else "vga")


def serial_console(devices: ET.Element) -> None:
    _sub(_sub(devices, "serial", type="pty"), "target", port="0")
    _sub(_sub(devices, "console", type="pty"), "target", type="serial", port="0")


def domain(spec: GuestSpec, uuid: str = "") -> str:
    """The whole domain definition.  `uuid` is passed on every redefinition so it never changes."""
    root = ET.Element("domain", type=spec.virt_type)
    _sub(root, "name", spec.name)
    if uuid:
        _sub(root, "uuid", uuid)
    metadata(root, spec.owner)
    _sub(root, "memory", str(spec.memory // 1024), unit="KiB")
    _sub(root, "vcpu", str(spec.vcpus))
    if spec.cpu_priority != "normal":  # the whole guest: its vCPU threads and QEMU's own (device emulation)
        tune = _sub(root, "cputune")
        _sub(tune, "vcpusched", vcpus=f"0-{spec.vcpus - 1}", scheduler=spec.cpu_priority)
        _sub(tune, "emulatorsched", scheduler=spec.cpu_priority)
    os_(root, spec)
    _sub(_sub(root, "features"), "acpi")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    devices = _sub(root, "devices")
    disk(devices, spec)
    if spec.seed:
        seed_cdrom(devices, spec.seed.path)
    for iface in spec.interfaces:
        interface(devices, iface)
    serial_console(devices)
    graphics(devices, spec.graphics)
    if spec.agent:
        agent_channel(devices)
    _sub(devices, "memballoon", model="virtio")
    return to_string(root)


# ---- observation -------------------------------------------------------------------------------------

def _attr(root: ET.Element, path: str, attr: str, default: str = "") -> str:
    el = root.find(path)
    return el.get(attr, default) if el is not None else default


def _text(root: ET.Element, path: str, default: str = "") -> str:
    el = root.find(path)
    return (el.text or "").strip() if el is not None else default


def _memory_bytes(root: ET.Element) -> int:
    el = root.find("memory")
    if el is None or not el.text:
        return 0
    factor = {"b": 1, "bytes": 1, "k": 1024, "kib": 1024, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30,
              "gib": 1 << 30}.get(el.get("unit", "KiB").lower(), 1024)
    return int(el.text) * factor


def observe_domain(xml: str) -> dict[str, Any]:
    """The managed fields of any domain XML, as a canonical dict (what libvirt adds is ignored)."""
    root = ET.fromstring(xml)
    ifaces = []
    for el in root.findall("devices/interface"):
        src = el.find("source")
        src_attrs = src.attrib if src is not None else {}
        ifaces.append({"type": el.get("type", ""), "mac": _attr(el, "mac", "address").lower(),
                       "source": src_attrs.get("dev") or src_attrs.get("bridge") or src_attrs.get("network", ""),
                       "model": _attr(el, "model", "type")})
    gfx = root.find("devices/graphics")
    owner = root.find(f"metadata/{{{OWNER_NS}}}owner")
    return {
        "name": _text(root, "name"), "uuid": _text(root, "uuid"), "virtType": root.get("type", ""),
        "memory": _memory_bytes(root), "vcpus": int(_text(root, "vcpu", "0") or 0),
        "cpuPriority": _attr(root, "cputune/vcpusched", "scheduler", "normal"),
        "diskPath": _attr(root, "devices/disk[@device='disk']/source", "file")
        or _attr(root, "devices/disk[@device='disk']/source", "dev"),
        "diskFormat": _attr(root, "devices/disk[@device='disk']/driver", "type"),
        "interfaces": ifaces, "graphics": gfx.get("type", "none") if gfx is not None else "none",
        "seedPath": _attr(root, "devices/disk[@device='cdrom']/source", "file")
        or _attr(root, "devices/disk[@device='cdrom']/source", "dev"),
        "agent": any(_attr(ch, "target", "name") == AGENT_CHANNEL for ch in root.findall("devices/channel")),
        "kernel": _text(root, "os/kernel"), "initrd": _text(root, "os/initrd"), "cmdline": _text(root, "os/cmdline"),
        "owner": {k: _text(owner, f"{{{OWNER_NS}}}{k}") for k in ("project", "stack", "resource")}
        if owner is not None else None,
    }


def observe_volume(xml: str) -> dict[str, Any]:
    root = ET.fromstring(xml)
    return {"name": _text(root, "name"), "path": _text(root, "target/path"),
            "capacity": int(_text(root, "capacity", "0") or 0), "format": _attr(root, "target/format", "type"),
            "backingPath": _text(root, "backingStore/path"),
            "backingFormat": _attr(root, "backingStore/format", "type")}


def disk_sources(xml: str) -> list[str]:
    """The files and block devices behind a domain's disks (a path is compared whole, never as a part)."""
    root = ET.fromstring(xml)
    found = []
    for src in root.findall("devices/disk/source"):
        path = src.get("file") or src.get("dev")
        if path:
            found.append(path)
    return found
