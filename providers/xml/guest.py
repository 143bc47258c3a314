"""The XML mapping of each guest field: how it is written into a domain definition and read back.

Used by the field declarations of GuestSpec (providers/model/guest.py).  A reader takes any definition, ours
or the live one libvirt normalised (with its addresses, aliases and defaults), and returns the canonical
value, so that what libvirt adds on its own never counts as drift.  Pure.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from providers.model.fields import Xml
from providers.xml.util import OWNER_NS, attr, part, sub, text

AGENT_CHANNEL = "org.qemu.guest_agent.0"
OWNER_KEYS = ("project", "stack", "resource")


def _set_type(root: ET.Element, spec: Any) -> None:
    root.set("type", spec.virt_type)


def _name(root: ET.Element, spec: Any) -> None:
    sub(root, "name", spec.name)


def _owner(root: ET.Element, spec: Any) -> None:
    el = sub(part(root, "metadata"), f"{{{OWNER_NS}}}owner")
    for key in OWNER_KEYS:
        sub(el, f"{{{OWNER_NS}}}{key}", getattr(spec.owner, key))


def observe_owner(root: ET.Element) -> dict[str, str] | None:
    owner = root.find(f"metadata/{{{OWNER_NS}}}owner")
    return {k: text(owner, f"{{{OWNER_NS}}}{k}") for k in OWNER_KEYS} if owner is not None else None


def _memory(root: ET.Element, spec: Any) -> None:
    sub(root, "memory", str(spec.memory // 1024), unit="KiB")


def _observe_memory(root: ET.Element) -> int:
    el = root.find("memory")
    if el is None or not el.text:
        return 0
    factor = {"b": 1, "bytes": 1, "k": 1024, "kib": 1024, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30,
              "gib": 1 << 30}.get(el.get("unit", "KiB").lower(), 1024)
    return int(el.text) * factor


def _description(root: ET.Element, spec: Any) -> None:
    if spec.description:
        sub(root, "description", spec.description)


def _vcpus(root: ET.Element, spec: Any) -> None:
    sub(root, "vcpu", str(spec.vcpus))


def _cpu_priority(root: ET.Element, spec: Any) -> None:
    if spec.cpu_priority != "normal":  # the whole guest: its vCPU threads and QEMU's own (device emulation)
        tune = sub(root, "cputune")
        sub(tune, "vcpusched", vcpus=f"0-{spec.vcpus - 1}", scheduler=spec.cpu_priority)
        sub(tune, "emulatorsched", scheduler=spec.cpu_priority)


def _kernel(root: ET.Element, spec: Any) -> None:
    os_el = part(root, "os")
    if spec.kernel:
        sub(os_el, "kernel", spec.kernel)
    else:
        sub(os_el, "boot", dev="hd")


def _initrd(root: ET.Element, spec: Any) -> None:
    if spec.kernel and spec.initrd:
        sub(part(root, "os"), "initrd", spec.initrd)


def _cmdline(root: ET.Element, spec: Any) -> None:
    if spec.kernel and spec.cmdline:
        sub(part(root, "os"), "cmdline", spec.cmdline)


def _disk(root: ET.Element, spec: Any) -> None:
    """A file disk, or a block disk for a device path (an LV of a logical pool)."""
    block = spec.disk_path.startswith("/dev/")
    el = sub(part(root, "devices"), "disk", type="block" if block else "file", device="disk")
    sub(el, "driver", name="qemu", type=spec.disk_format)
    sub(el, "source", **({"dev": spec.disk_path} if block else {"file": spec.disk_path}))
    sub(el, "target", dev="vda", bus="virtio")


def _source_path(root: ET.Element, device: str) -> str:
    path = f"devices/disk[@device='{device}']/source"
    return attr(root, path, "file") or attr(root, path, "dev")


def _seed(root: ET.Element, spec: Any) -> None:
    """The cloud-init seed as a read-only IDE CD-ROM (machine type pc has IDE; every guest OS reads it)."""
    if not spec.seed:
        return
    path = spec.seed.path
    block = path.startswith("/dev/")
    el = sub(part(root, "devices"), "disk", type="block" if block else "file", device="cdrom")
    sub(el, "driver", name="qemu", type="raw")
    sub(el, "source", **({"dev": path} if block else {"file": path}))
    sub(el, "target", dev="hdc", bus="ide")
    sub(el, "readonly")


def interface(devices: ET.Element, iface: Any) -> None:
    el = sub(devices, "interface", type=iface.type)
    sub(el, "mac", address=iface.mac)
    if iface.type == "direct":
        sub(el, "source", dev=iface.source, mode="bridge")
    elif iface.type == "bridge":
        sub(el, "source", bridge=iface.source)
    else:
        sub(el, "source", network=iface.source)
    sub(el, "model", type=iface.model)


def _interfaces(root: ET.Element, spec: Any) -> None:
    for iface in spec.interfaces:
        interface(part(root, "devices"), iface)


def _observe_interfaces(root: ET.Element) -> list[dict[str, str]]:
    out = []
    for el in root.findall("devices/interface"):
        src = el.find("source")
        src_attrs = src.attrib if src is not None else {}
        out.append({"type": el.get("type", ""), "mac": attr(el, "mac", "address").lower(),
                    "source": src_attrs.get("dev") or src_attrs.get("bridge") or src_attrs.get("network", ""),
                    "model": attr(el, "model", "type")})
    return out


def _graphics(root: ET.Element, spec: Any) -> None:
    if spec.graphics == "none":
        return
    devices = part(root, "devices")
    sub(devices, "graphics", type=spec.graphics, autoport="yes", listen="127.0.0.1")
    sub(devices, "input", type="keyboard", bus="usb")
    sub(sub(devices, "video"), "model", type="qxl" if spec.graphics == "spice" else "vga")


def _observe_graphics(root: ET.Element) -> str:
    gfx = root.find("devices/graphics")
    return gfx.get("type", "none") if gfx is not None else "none"


def _agent(root: ET.Element, spec: Any) -> None:
    if spec.agent:
        sub(sub(part(root, "devices"), "channel", type="unix"), "target", type="virtio", name=AGENT_CHANNEL)


def _observe_agent(root: ET.Element) -> bool:
    return any(attr(ch, "target", "name") == AGENT_CHANNEL for ch in root.findall("devices/channel"))


VIRT_TYPE = Xml(lambda r: r.get("type", ""), _set_type)
NAME = Xml(lambda r: text(r, "name"), _name, tags=("name",))
OWNER = Xml(observe_owner, _owner)
MEMORY = Xml(_observe_memory, _memory, tags=("memory", "currentMemory"))
DESCRIPTION = Xml(lambda r: text(r, "description"), _description, tags=("description",))
VCPUS = Xml(lambda r: int(text(r, "vcpu", "0") or 0), _vcpus, tags=("vcpu",))
CPU_PRIORITY = Xml(lambda r: attr(r, "cputune/vcpusched", "scheduler", "normal"), _cpu_priority, tags=("cputune",))
KERNEL = Xml(lambda r: text(r, "os/kernel"), _kernel, "os")
INITRD = Xml(lambda r: text(r, "os/initrd"), _initrd, "os")
CMDLINE = Xml(lambda r: text(r, "os/cmdline"), _cmdline, "os")
def _owns_disk(dev: ET.Element, _macs: set[str]) -> bool:
    return dev.tag == "disk" and dev.get("device", "disk") == "disk" and attr(dev, "target", "dev") == "vda"


def _owns_seed(dev: ET.Element, _macs: set[str]) -> bool:
    return dev.tag == "disk" and dev.get("device") == "cdrom" and \
        "-cidata-" in (attr(dev, "source", "file") or attr(dev, "source", "dev"))


def _owns_interface(dev: ET.Element, macs: set[str]) -> bool:
    return dev.tag == "interface" and attr(dev, "mac", "address").lower() in macs


def _owns_graphics(dev: ET.Element, _macs: set[str]) -> bool:
    """The display, its keyboard and video card, and the audio backend libvirt adds for the display (spice
    for spice, none for vnc), which it refuses to keep with another display."""
    return dev.tag in ("graphics", "video") or dev.tag == "input" and dev.get("type") == "keyboard" and \
        dev.get("bus") == "usb" or dev.tag == "audio" and dev.get("type") in ("spice", "none")


def _owns_agent(dev: ET.Element, _macs: set[str]) -> bool:
    return dev.tag == "channel" and attr(dev, "target", "name") == AGENT_CHANNEL


DISK_PATH = Xml(lambda r: _source_path(r, "disk"), _disk, "devices", owns=_owns_disk)
DISK_FORMAT = Xml(lambda r: attr(r, "devices/disk[@device='disk']/driver", "type"))
SEED = Xml(lambda r: _source_path(r, "cdrom"), _seed, "devices", seen_as="seedPath", owns=_owns_seed)
INTERFACES = Xml(_observe_interfaces, _interfaces, "devices", owns=_owns_interface)
GRAPHICS = Xml(_observe_graphics, _graphics, "devices", owns=_owns_graphics)
AGENT = Xml(_observe_agent, _agent, "devices", owns=_owns_agent)
