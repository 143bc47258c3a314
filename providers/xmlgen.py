"""libvirt XML from specs, with ElementTree only (names and paths are escaped by the serializer).

Small functions named after the libvirt elements they build, plus `observe_domain`, which reads any
domain XML (ours or libvirt's live one, with its addresses, aliases and seclabels) back into the
canonical dict that the diff compares.  Pure: no host is touched here.
"""

from __future__ import annotations

import hashlib
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


# ---- keeping what virtfleet does not manage ------------------------------------------------------------

MANAGED_TOP = ("name", "uuid", "memory", "currentMemory", "vcpu", "cputune", "os", "on_poweroff", "on_reboot",
               "on_crash")


def _ours(dev: ET.Element, macs: set[str]) -> bool:
    """Whether a device of a domain is one virtfleet defines (see `domain`), whatever libvirt added to it."""
    tag = dev.tag
    if tag == "disk":
        if dev.get("device") == "cdrom":
            return "-cidata-" in (_attr(dev, "source", "file") or _attr(dev, "source", "dev"))
        return dev.get("device", "disk") == "disk" and _attr(dev, "target", "dev") == "vda"
    if tag == "interface":
        return _attr(dev, "mac", "address").lower() in macs
    if tag == "input":
        return dev.get("type") == "keyboard" and dev.get("bus") == "usb"
    if tag == "channel":
        return _attr(dev, "target", "name") == AGENT_CHANNEL
    return tag in ("serial", "console", "graphics", "video", "memballoon")


def _signature(dev: ET.Element) -> str:
    """A device as libvirt keeps it, without the addresses and aliases it assigns."""
    copy = ET.fromstring(ET.tostring(dev))
    for parent in copy.iter():
        for child in [c for c in parent if c.tag in ("address", "alias")]:
            parent.remove(child)
    for el in copy.iter():
        el.text = (el.text or "").strip() or None
        el.tail = None
    return ET.tostring(copy, encoding="unicode")


def describe(signature: str) -> str:
    """A device signature in a few words, e.g. `disk vdb /var/lib/x.qcow2`, `hostdev usb 046d:c52b`."""
    dev = ET.fromstring(signature)
    words = [dev.tag, dev.get("type", "") if dev.tag not in ("disk",) else _attr(dev, "target", "dev"),
             _attr(dev, "source", "file") or _attr(dev, "source", "dev") or _attr(dev, "source", "bridge")
             or _attr(dev, "source/vendor", "id") + (":" + _attr(dev, "source/product", "id")
                                                     if dev.find("source/product") is not None else ""),
             _attr(dev, "mac", "address")]
    return " ".join(w for w in words if w)


def _device_id(dev: ET.Element) -> str:
    return hashlib.sha256(_signature(dev).encode()).hexdigest()[:16]


def device_ids(xml: str, leave_out: tuple[str, ...] = ()) -> list[str]:
    """Short ids of a definition's devices (what libvirt made of virtfleet's definition, recorded after a
    define so that what it adds itself, controllers and such, is never taken for a device added outside)."""
    return sorted({_device_id(d) for d in ET.fromstring(xml).findall("devices/*")} - set(leave_out))


def unmanaged_devices(live_xml: str, defined: list[str], macs: set[str]) -> dict[str, str]:
    """{id: description} of the devices in a live definition that virtfleet did not define and does not
    manage: added outside (virsh attach-device, virt-manager)."""
    known = set(defined)
    return {i: describe(_signature(d)) for d in ET.fromstring(live_xml).findall("devices/*")
            if not _ours(d, macs) and (i := _device_id(d)) not in known}


def managed_view(xml: str, macs: set[str]) -> str:
    """A definition without the devices virtfleet does not manage, for comparing managed fields only."""
    root = ET.fromstring(xml)
    devices = root.find("devices")
    if devices is not None:
        for dev in [d for d in devices if not _ours(d, macs)]:
            devices.remove(dev)
    return ET.tostring(root, encoding="unicode")


def merge(live_xml: str, ours_xml: str, macs: set[str]) -> str:
    """The live definition with virtfleet's managed parts replaced by `ours`, everything else kept: devices
    and settings added outside (a second disk, a USB device, CPU tuning) survive an update.  `macs`: the
    MACs of the interfaces virtfleet manages (before and after the change).  Replaced devices keep the
    PCI addresses libvirt gave them, so the guest sees the same hardware."""
    live, ours = ET.fromstring(live_xml), ET.fromstring(ours_xml)
    live.set("type", ours.get("type", live.get("type", "")))
    for tag in MANAGED_TOP:
        for el in live.findall(tag):
            live.remove(el)
    for n, tag in enumerate(MANAGED_TOP):
        for el in ours.findall(tag):
            live.insert(n, el)
    owner = ours.find(f"metadata/{{{OWNER_NS}}}owner")
    md = live.find("metadata")
    if md is None:
        md = ET.SubElement(live, "metadata")
    for old in md.findall(f"{{{OWNER_NS}}}owner"):
        md.remove(old)
    if owner is not None:
        md.append(owner)
    features = live.find("features")
    if features is None:
        features = ET.SubElement(live, "features")
    if features.find("acpi") is None:
        ET.SubElement(features, "acpi")
    devices = live.find("devices")
    if devices is None:
        devices = ET.SubElement(live, "devices")
    addresses: dict[tuple[str, str], ET.Element] = {}
    for dev in list(devices):
        if _ours(dev, macs):
            key = _attr(dev, "target", "dev") if dev.tag == "disk" else _attr(dev, "mac", "address").lower()
            address = dev.find("address")
            if dev.tag in ("disk", "interface") and address is not None:
                addresses[(dev.tag, key)] = address
            devices.remove(dev)
    for dev in ours.findall("devices/*"):
        key = _attr(dev, "target", "dev") if dev.tag == "disk" else _attr(dev, "mac", "address").lower()
        if (dev.tag, key) in addresses and dev.get("device") != "cdrom":
            dev.append(addresses[(dev.tag, key)])
        devices.append(dev)
    for el in live.iter():
        el.tail = None
        if el.text is not None and not el.text.strip():
            el.text = None
    return to_string(live)
